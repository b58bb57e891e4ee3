"""The ops API on the embedded broker and a migrated SQLite ledger: summaries, centers, topics and
lag, the dead-letter browser, redrive back to the origin topic, discard with a reason, the audit
trail, ops-only access, and the Prometheus collector.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, insert, select, text

from consumers.routing import route
from scheduler.db import create_engine_for, deadletters, meetings
from scheduler.directory import default_directory
from scheduler.held_commands import HeldCommand, HeldCommands
from scheduler.request_store import RequestStore, canonical_body_hash
from schemas.help_request import parse_help_request
from services.api_keys import parse_api_keys
from services.gateway import create_gateway
from services.kafka_config import KafkaSettings, kafka_python_producer_kwargs
from services.ops_api import COOKIE, OpsContext, create_ops_router
from services.ops_deadletters import DeadLetterDesk, KafkaRecordSink
from services.ops_kafka import KafkaObserver
from services.ops_metrics import OpsCollector
from services.settings import Settings
from services.topics import TopicNames

pytest_plugins = ["tests.integration.db_fixtures"]

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # Monday 09:00 in Taipei, 17:00 (Sunday) in Redmond
OPS, PORTAL = "ops-key-0123456789abcdef", "portal-key-0123456789"
KEYS = [{"name": "alice-ops", "key": OPS, "kind": "ops"},
        {"name": "portal", "key": PORTAL, "kind": "portal"}]
DIRECTORY = default_directory()


class NoPublisher:
    """The gateway's publisher port; these tests submit nothing over HTTP."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, request_id: str, body: Any) -> None: ...
    async def reachable(self) -> bool:
        return True


@dataclass
class Ops:
    client: TestClient
    engine: Engine
    store: RequestStore
    topics: TopicNames
    kafka: KafkaSettings
    observer: KafkaObserver

    def get(self, path: str, key: str | None = OPS, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return self.client.get(path, headers=headers, **kwargs)

    def post(self, path: str, key: str | None = OPS, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return self.client.post(path, headers=headers, **kwargs)


@pytest.fixture
def ops(new_database: Any, kafka_settings: KafkaSettings, topics: TopicNames) -> Iterator[Ops]:
    engine = create_engine_for(new_database("sqlite"))
    store = RequestStore(engine)
    keys = parse_api_keys(KEYS, "test keys")
    observer = KafkaObserver.for_pipeline(kafka_settings, topics)
    sink = KafkaRecordSink(kafka_python_producer_kwargs(kafka_settings))
    app = create_gateway(Settings(), store=store, publisher=NoPublisher(), keys=keys,
                         clock=lambda: T0)
    app.include_router(create_ops_router(OpsContext(
        keys=keys, engine=engine, directory=DIRECTORY, observer=observer,
        desk=DeadLetterDesk(engine, sink, lambda: T0), clock=lambda: T0)))
    with TestClient(app, base_url="http://gateway") as client:
        yield Ops(client, engine, store, topics, kafka_settings, observer)
    observer.close()
    sink.close()
    engine.dispose()


def body(request_id: str, language: str = "zh-TW", country: str = "TW") -> dict[str, Any]:
    return {"request_id": request_id, "submitted_at": "2026-03-02T08:55:00+08:00",
            "source": "admin_center",
            "tenant": {"id": "t-1", "name": "Contoso", "country": country},
            "requester": {"name": "Lin Mei", "email": "mei@example.com", "language": language},
            "topic": "core_onboarding"}


def seed(store: RequestStore, data: dict[str, Any], upto: str, seconds: int = 10) -> None:
    """Accept the request at T0 and move it through the stages up to ``upto``."""
    request = parse_help_request(data)
    rid = request.request_id
    store.accept(request, canonical_body_hash(data), T0, data)
    if upto == "accepted":
        return
    decision = route(request, DIRECTORY, T0)
    if upto == "escalated":
        store.advance(rid, "escalated", T0 + timedelta(seconds=1),
                      {"stage": "booking", "reasons": ["no_capacity"]})
        return
    store.advance(rid, "routed", T0 + timedelta(seconds=1),
                  {"decision": decision.to_json_dict()}, decision.center_id)
    store.advance(rid, "booked", T0 + timedelta(seconds=seconds // 2), {"reasons": []})
    store.advance(rid, "invited", T0 + timedelta(seconds=seconds), {"uid": f"{rid}@x"})


def dead_letter(ops: Ops, *, error_class: str = "Unprocessable", offset: int = 7,
                key: bytes = b"bad-1", value: bytes = b"\xff not json") -> int:
    headers = {"traceparent": "00-abc-def-01", "error_class": error_class,
               "error_message": "not a valid HelpRequest v1", "origin_topic":
               ops.topics.requests_submitted, "origin_partition": "2",
               "origin_offset": str(offset), "attempts": "1"}
    letter = ops.store.record_deadletter(
        request_id=key.decode(), origin_topic=ops.topics.requests_submitted,
        origin_partition=2, origin_offset=offset, error_class=error_class,
        message="not a valid HelpRequest v1", payload=value, headers=headers,
        now=T0 - timedelta(minutes=5))
    with ops.engine.begin() as conn:  # until the store records the key itself
        conn.execute(text("UPDATE deadletters SET record_key = :key WHERE id = :id"),
                     {"key": key, "id": letter})
    return letter


# --- access --------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, status", [(None, 401), ("not-a-key-at-all-000", 401),
                                          (PORTAL, 403), (OPS, 200)],
                         ids=["no key", "unknown key", "portal key", "ops key"])
def test_only_ops_keys_read_the_ops_api(ops: Ops, key: str | None, status: int) -> None:
    assert ops.get("/v1/ops/requests/summary", key).status_code == status
    assert ops.post("/v1/ops/deadletters/1/redrive", key).status_code in (status, 404)


def test_the_dashboard_signs_in_once_with_an_httponly_strict_cookie(ops: Ops) -> None:
    login = ops.client.get("/dashboard")
    assert login.status_code == 401 and 'action="/dashboard/login"' in login.text

    refused = ops.client.get("/dashboard", params={"key": PORTAL}, follow_redirects=False)
    assert refused.status_code == 403 and "ops key" in refused.text

    signed = ops.client.get("/dashboard", params={"key": OPS}, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/dashboard"
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and COOKIE in cookie

    page = ops.client.get("/dashboard")  # the client keeps the cookie
    assert page.status_code == 200 and 'id="flow-chart"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "https://" not in page.text  # every asset is served here
    assert ops.client.get("/v1/ops/requests/summary").status_code == 200
    assert ops.client.get("/dashboard/assets/app.js").status_code == 200
    assert ops.client.get("/dashboard/assets/secrets.txt").status_code == 404

    form = ops.client.post("/dashboard/login", content=f"key={OPS}", follow_redirects=False,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 303


def test_the_ops_api_is_in_the_openapi_document(ops: Ops) -> None:
    paths = ops.client.get("/openapi.json").json()["paths"]
    for path in ("/v1/ops/topics", "/v1/ops/lag", "/v1/ops/requests/summary",
                 "/v1/ops/centers", "/v1/ops/deadletters", "/v1/ops/deadletters/{deadletter_id}"
                 "/redrive", "/v1/ops/deadletters/{deadletter_id}/discard", "/v1/ops/audit"):
        assert path in paths, path
    assert "/dashboard" not in paths


# --- requests, centers, escalations -------------------------------------------------------------


def test_requests_summary_counts_by_status_region_language_with_latencies(ops: Ops) -> None:
    seed(ops.store, body("r-tw"), "invited", seconds=10)
    seed(ops.store, body("r-de", "de-DE", "DE"), "invited", seconds=30)
    seed(ops.store, body("r-jp", "ja", "JP"), "escalated")
    seed(ops.store, body("r-us", "en-US", "US"), "accepted")

    summary = ops.get("/v1/ops/requests/summary").json()

    assert summary["total"] == 4
    assert summary["by_status"] == {"invited": 2, "escalated": 1, "accepted": 1}
    assert summary["by_region"] == {"APAC": 2, "EMEA": 1, "AMER": 1}
    assert summary["by_language"] == {"zh-Hant": 1, "de": 1, "ja": 1, "en": 1}
    invited = summary["latency_seconds"]["invited"]
    assert invited == {"count": 2, "p50": 10.0, "p95": 30.0, "p99": 30.0}
    assert summary["latency_seconds"]["booked"]["count"] == 2


def test_recent_requests_click_through_to_routing_reasons_and_rejections(ops: Ops) -> None:
    seed(ops.store, body("r-tw"), "invited")
    seed(ops.store, body("r-jp", "ja", "JP"), "escalated")

    recent = ops.get("/v1/ops/requests/recent").json()["requests"]
    assert [r["request_id"] for r in recent] == ["r-tw", "r-jp"]  # the last to move first
    assert [e["status"] for e in recent[0]["timeline"]] == [
        "accepted", "routed", "booked", "invited"]
    assert "body" not in recent[0] and "email" not in json.dumps(recent)

    detail = ops.get("/v1/ops/requests/r-tw").json()
    decision = route(parse_help_request(body("r-tw")), DIRECTORY, T0)
    assert detail["explanation"]["reasons"] == [str(r) for r in decision.reasons]
    assert detail["explanation"]["rejected"] == [r.to_json_dict() for r in decision.rejected]
    assert detail["explanation"]["language"] == "zh-Hant"
    escalated = ops.get("/v1/ops/requests/r-jp").json()["explanation"]["escalation"]
    assert escalated == {"stage": "booking", "reasons": ["no_capacity"]}
    assert ops.get("/v1/ops/requests/nope").status_code == 404
    assert ops.get("/v1/ops/escalations").json()["escalations"] == [
        {"stage": "booking", "reason": "no_capacity", "count": 1}]


def test_centers_show_open_now_next_opening_utilisation_and_heat_map(ops: Ops) -> None:
    with ops.engine.begin() as conn:
        for n, hour in enumerate((2, 3)):  # 10:00 and 11:00 in Taipei, today
            start = T0.replace(hour=hour)
            conn.execute(insert(meetings).values(
                request_id=f"m-{n}", center_id="taipei", specialist_id="tpe-01",
                language="zh-Hant", start_utc=start, end_utc=start + timedelta(hours=1),
                revision=1, uid=f"m-{n}@x", status="active", created_at=T0, updated_at=T0))

    centers = {c["center_id"]: c for c in ops.get("/v1/ops/centers").json()["centers"]}

    taipei, redmond = centers["taipei"], centers["redmond"]
    assert taipei["open_now"] is True and taipei["local_time"].startswith("2026-03-02T09:00")
    assert redmond["open_now"] is False  # Sunday evening there
    assert redmond["next_opening_local"].startswith("2026-03-02T")  # Monday morning
    tpe01 = next(s for s in taipei["specialists"] if s["specialist_id"] == "tpe-01")
    assert tpe01["meetings_today"] == 2 and tpe01["meetings_week"] == 2
    per_day = DIRECTORY.center("taipei").specialists[0].max_meetings_per_day
    assert tpe01["utilisation_today"] == round(2 / per_day, 3)
    assert taipei["heatmap_hours"][0][10] == 1.0 and taipei["heatmap_hours"][0][11] == 1.0
    assert sum(map(sum, redmond["heatmap_hours"])) == 0


# --- Kafka: topics and lag ---------------------------------------------------------------------


def test_topics_show_end_offsets_and_the_pipeline_groups_lag(ops: Ops) -> None:
    producer = KafkaProducer(bootstrap_servers=ops.kafka.bootstrap, acks="all")
    for n in range(5):  # one at a time: Tansu reports a batch's base offset + 1 as the end
        producer.send(ops.topics.requests_submitted, key=b"k", value=b"v%d" % n,
                      partition=1).get(timeout=10)
    producer.close()
    group = f"{ops.topics.prefix}-pipeline"
    committer = KafkaConsumer(bootstrap_servers=ops.kafka.bootstrap, group_id=group,
                              enable_auto_commit=False)
    committer.commit({TopicPartition(ops.topics.requests_submitted, 1):
                      OffsetAndMetadata(2, "", -1)})
    committer.close()

    topics = {t["topic"]: t for t in ops.get("/v1/ops/topics").json()["topics"]}
    submitted = topics[ops.topics.requests_submitted]
    assert submitted["end_offset_total"] == 5
    assert {p["partition"]: p["end_offset"] for p in submitted["partitions"]}[1] == 5
    assert len(submitted["partitions"]) == 6

    [pipeline] = ops.get("/v1/ops/lag").json()["groups"]
    assert pipeline["group"] == group and pipeline["total_lag"] == 3
    assert {"topic": ops.topics.requests_submitted, "partition": 1, "committed": 2,
            "end_offset": 5, "lag": 3} in pipeline["partitions"]
    assert pipeline["trend"][-1]["lag"] == 3


# --- dead letters ------------------------------------------------------------------------------


def test_dead_letters_are_listed_with_headers_and_payload(ops: Ops) -> None:
    letter = dead_letter(ops)
    dead_letter(ops, error_class="DeliveryUnavailable", offset=8, value=b'{"a": 1}')

    summary = ops.get("/v1/ops/deadletters/summary").json()
    assert summary["open_by_class"] == {"Unprocessable": 1, "DeliveryUnavailable": 1}
    assert summary["oldest_open_age_seconds"] == 300.0

    listed = ops.get("/v1/ops/deadletters", params={"error_class": "Unprocessable"}).json()
    [shown] = listed["deadletters"]
    assert shown["id"] == letter and shown["key"] == "bad-1"
    assert shown["headers"]["origin_offset"] == "7" and shown["headers"]["attempts"] == "1"
    assert shown["payload_text"] is None and shown["payload_base64"] == "/yBub3QganNvbg=="


def test_redrive_puts_the_original_record_back_on_its_origin_topic(ops: Ops) -> None:
    letter = dead_letter(ops, key=b"bad-1", value=b"\xff not json")

    response = ops.post(f"/v1/ops/deadletters/{letter}/redrive")

    assert response.status_code == 200, response.text
    outcome = response.json()
    assert outcome["topic"] == ops.topics.requests_submitted and outcome["partition"] == 2
    [record] = read_partition(ops, ops.topics.requests_submitted, 2)
    assert (record.key, record.value) == (b"bad-1", b"\xff not json")
    headers = dict(record.headers)
    assert headers["traceparent"] == b"00-abc-def-01"
    assert not {"error_class", "error_message", "origin_offset", "attempts"} & set(headers)
    assert json.loads(headers["redriven_from"]) == {
        "deadletter_id": letter, "topic": ops.topics.requests_submitted, "partition": 2,
        "offset": 7, "error_class": "Unprocessable"}
    assert ops.get("/v1/ops/deadletters").json()["deadletters"] == []
    [moved] = ops.get("/v1/ops/deadletters", params={"state": "redriven"}).json()["deadletters"]
    assert moved["id"] == letter
    [entry] = ops.get("/v1/ops/audit").json()["audit"]
    assert (entry["actor"], entry["action"], entry["deadletter_id"]) == (
        "alice-ops", "redrive", letter)
    assert entry["at"] == "2026-03-02T01:00:00Z"
    assert ops.post(f"/v1/ops/deadletters/{letter}/redrive").status_code == 409
    assert ops.post("/v1/ops/deadletters/999/redrive").status_code == 404


def test_redrive_all_of_a_class_leaves_the_other_classes(ops: Ops) -> None:
    first, second = dead_letter(ops, offset=1), dead_letter(ops, offset=2)
    other = dead_letter(ops, error_class="DeliveryUnavailable", offset=3)

    response = ops.post("/v1/ops/deadletters/redrive", json={"error_class": "Unprocessable"})

    assert [r["id"] for r in response.json()["redriven"]] == [first, second]
    assert len(read_partition(ops, ops.topics.requests_submitted, 2)) == 2
    open_ids = [d["id"] for d in ops.get("/v1/ops/deadletters").json()["deadletters"]]
    assert open_ids == [other]


def test_discard_needs_a_reason_and_is_audited(ops: Ops) -> None:
    letter = dead_letter(ops)

    assert ops.post(f"/v1/ops/deadletters/{letter}/discard", json={"reason": ""}
                    ).status_code == 422
    response = ops.post(f"/v1/ops/deadletters/{letter}/discard",
                        json={"reason": "test record from the load test"})

    assert response.json() == {"id": letter, "state": "discarded",
                               "reason": "test record from the load test"}
    with ops.engine.connect() as conn:
        assert conn.execute(select(deadletters.c.state)).scalar_one() == "discarded"
    [entry] = ops.get("/v1/ops/audit").json()["audit"]
    assert (entry["action"], entry["detail"]) == ("discard", "test record from the load test")
    assert ops.post(f"/v1/ops/deadletters/{letter}/redrive").status_code == 409


# --- /metrics ----------------------------------------------------------------------------------


def test_the_collector_exposes_ledger_and_kafka_numbers_without_personal_data(ops: Ops) -> None:
    seed(ops.store, body("r-tw"), "invited", seconds=10)
    seed(ops.store, body("r-jp", "ja", "JP"), "escalated")
    dead_letter(ops)
    HeldCommands(ops.engine).hold(HeldCommand(  # a cancel whose request has not come yet
        "c-1", "r-later", "cancel", b"{}", b"r-later", {}, "t.requests.commands", 0, 3,
        T0 - timedelta(minutes=2)))
    registry = CollectorRegistry()
    registry.register(OpsCollector(ops.engine, ops.observer, lambda: T0))

    text = generate_latest(registry).decode()

    assert ('fasttrack_requests{language="zh-Hant",region="APAC",status="invited"} 1.0'
            in text)
    assert 'fasttrack_stage_latency_seconds_bucket{le="10.0",stage="invited"} 1.0' in text
    assert 'fasttrack_stage_latency_seconds_count{stage="invited"} 1.0' in text
    assert 'fasttrack_escalations_total{reason="no_capacity",stage="booking"} 1.0' in text
    assert 'fasttrack_deadletters{error_class="Unprocessable",state="open"} 1.0' in text
    assert "fasttrack_deadletter_oldest_open_age_seconds 300.0" in text
    assert "fasttrack_commands_held 1.0" in text
    assert "fasttrack_commands_held_oldest_age_seconds 120.0" in text
    assert 'fasttrack_ops_source_up{source="kafka"} 1.0' in text
    assert 'fasttrack_topic_end_offset{topic="' in text
    for private in ("r-tw", "Lin Mei", "mei@example.com", "Contoso", "bad-1"):
        assert private not in text


def read_partition(ops: Ops, topic: str, partition: int) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=ops.kafka.bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=1500)
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    end = consumer.end_offsets([tp])[tp]
    records: list[Any] = []
    for record in consumer:
        records.append(record)
        if len(records) >= end:
            break
    consumer.close()
    return records
