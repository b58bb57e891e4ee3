"""The HTTP gateway (DESIGN §11) on the embedded broker and a migrated SQLite/PostgreSQL ledger.

Every submission that is answered 202 is read back from ``requests.submitted``: the key is the
request_id, the value the canonical JSON of the body as sent, whose hash the ledger stored.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI
from sqlalchemy import Engine, select

from scheduler.db import create_engine_for, requests
from scheduler.request_store import RequestStore, canonical_body_hash, canonical_json
from services.api_keys import (
    InvalidApiKeys,
    KeyKind,
    dump_api_keys,
    generate_dev_key,
    load_api_keys,
    parse_api_keys,
)
from services.gateway import MAX_BODY_BYTES, create_gateway
from services.kafka_config import KafkaSettings, aiokafka_client_kwargs
from services.publisher import KafkaRequestPublisher, PublishFailed, RequestPublisher
from services.settings import Settings
from services.topics import DEFAULT_PARTITIONS, TopicNames

pytest_plugins = ["tests.integration.db_fixtures"]

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
PORTAL = "portal-key-0123456789"
PARTNER = "partner-p7-key-0123456789"
OTHER_PARTNER = "partner-p9-key-0123456789"
OPS = "ops-key-0123456789abcdef"
KEYS: list[dict[str, Any]] = [
    {"name": "portal", "key": PORTAL, "kind": "portal"},
    {"name": "fabrikam", "key": PARTNER, "kind": "partner", "partner_id": "p-7",
     "tenants": ["t-42", "t-43"]},
    {"name": "northwind", "key": OTHER_PARTNER, "kind": "partner", "partner_id": "p-9",
     "tenants": ["t-99"]},
    {"name": "ops", "key": OPS, "kind": "ops"},
]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def portal_body(request_id: str = "req-1", **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request_id": request_id,
        "submitted_at": "2026-03-02T09:00:00+08:00",
        "source": "admin_center",
        "tenant": {"id": "t-42", "name": "Contoso 台灣", "country": "TW"},
        "requester": {"name": "Lin Mei", "email": "mei@example.com", "language": "zh-TW"},
        "topic": "core_onboarding",
    }
    return data | changes


def partner_body(request_id: str = "req-p", partner_id: str = "p-7", tenant_id: str = "t-42",
                 **changes: Any) -> dict[str, Any]:
    tenant = {"id": tenant_id, "name": "Contoso", "country": "DE"}
    partner = {"id": partner_id, "name": "Fabrikam", "email": "ops@fabrikam.example.com"}
    return portal_body(request_id, source="partner", tenant=tenant, partner=partner) | changes


@dataclass
class Gateway:
    client: httpx.AsyncClient
    app: FastAPI
    store: RequestStore
    engine: Engine
    kafka: KafkaSettings
    topics: TopicNames

    async def submit(self, body: Any, key: str = PORTAL, **kwargs: Any) -> httpx.Response:
        return await self.client.post("/v1/requests", json=body, headers=auth(key), **kwargs)

    async def read(self, request_id: str, key: str = PORTAL) -> httpx.Response:
        return await self.client.get(f"/v1/requests/{request_id}", headers=auth(key))

    async def published(self) -> list[ConsumerRecord[bytes, bytes]]:
        return await read_topic(self.kafka, self.topics.requests_submitted)

    def stored_hash(self, request_id: str) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(select(requests.c.body_hash)
                                    .where(requests.c.request_id == request_id)).scalar_one())


async def read_topic(kafka: KafkaSettings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic``, read up to its end offsets without a consumer group."""
    # No group, so no committed offsets: each partition starts at auto_offset_reset. (Seeking
    # to the beginning after assign() races the assignment's own reset.)
    consumer = AIOKafkaConsumer(**aiokafka_client_kwargs(kafka), enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(DEFAULT_PARTITIONS)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(20):
            while len(records) < sum(ends.values()):
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
        return records
    finally:
        await consumer.stop()


@asynccontextmanager
async def serve(engine: Engine, publisher: RequestPublisher, kafka: KafkaSettings,
                topics: TopicNames, store: RequestStore | None = None,
                keys: list[dict[str, Any]] = KEYS) -> AsyncIterator[Gateway]:
    """The gateway app with its lifespan running, and a client talking to it in process."""
    store = store or RequestStore(engine)
    app = create_gateway(Settings(), store=store, publisher=publisher,
                         keys=parse_api_keys(keys, "test keys"), clock=lambda: T0)
    transport = httpx.ASGITransport(app=app)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://gateway") as client):
        yield Gateway(client, app, store, engine, kafka, topics)


class FailingFirst:
    """A RequestPublisher around the real one whose first publish fails like a broker outage."""

    def __init__(self, inner: RequestPublisher) -> None:
        self.inner = inner
        self.failures_left = 1

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def publish(self, request_id: str, body: Mapping[str, Any]) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise PublishFailed("broker unreachable (simulated)")
        await self.inner.publish(request_id, body)

    async def reachable(self) -> bool:
        return await self.inner.reachable()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, new_database: Any) -> str:
    """A migrated SQLite file, or the dialect given by indirect parametrization."""
    return str(new_database(getattr(request, "param", "sqlite")))


@pytest.fixture
async def gateway(engine: Engine, kafka_settings: KafkaSettings,
                  topics: TopicNames) -> AsyncIterator[Gateway]:
    async with serve(engine, KafkaRequestPublisher(kafka_settings, topics), kafka_settings,
                     topics) as running:
        yield running


# --- POST /v1/requests: accepted, published once ---------------------------------------------


@pytest.mark.parametrize(
    "database_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
    indirect=True)
async def test_a_new_request_is_accepted_stored_and_published(gateway: Gateway) -> None:
    body = portal_body()

    response = await gateway.submit(body)

    assert response.status_code == 202
    assert response.json() == {"request_id": "req-1", "status": "accepted",
                               "status_url": "/v1/requests/req-1"}
    [record] = await gateway.published()
    assert record.key == b"req-1"
    assert record.value == canonical_json(body).encode("utf-8")
    assert canonical_body_hash(json.loads(record.value)) == gateway.stored_hash("req-1")
    status = (await gateway.read("req-1")).json()
    assert status == {"request_id": "req-1", "status": "accepted", "center_id": None,
                      "meeting": None, "timeline": [
                          {"status": "accepted", "at": "2026-03-02T01:00:00Z", "detail": None}]}


async def test_a_partner_request_is_published_with_its_body_as_sent(gateway: Gateway) -> None:
    body = partner_body(services=[], notes="Ünïcødé ✓")  # a default and non-ASCII kept as sent

    assert (await gateway.submit(body, key=PARTNER)).status_code == 202

    [record] = await gateway.published()
    assert record.value == canonical_json(body).encode("utf-8")
    assert canonical_body_hash(json.loads(record.value)) == gateway.stored_hash("req-p")


async def test_a_duplicate_gets_the_same_answer_and_nothing_is_published_again(
        gateway: Gateway) -> None:
    first = await gateway.submit(portal_body())
    gateway.store.advance("req-1", "routed", T0 + timedelta(minutes=1), center_id="taipei")
    reordered = dict(reversed(list(portal_body().items())))

    again = await gateway.submit(reordered)

    assert (again.status_code, again.json()) == (202, first.json())
    assert len(await gateway.published()) == 1
    assert [e["status"] for e in (await gateway.read("req-1")).json()["timeline"]] == [
        "accepted", "routed"]


async def test_a_duplicate_still_accepted_is_published_again(gateway: Gateway) -> None:
    """By design: the earlier publish may have failed, and the intake dedupes by request_id."""
    await gateway.submit(portal_body())

    again = await gateway.submit(portal_body())

    assert again.status_code == 202
    assert [r.value for r in await gateway.published()] == [
        canonical_json(portal_body()).encode()] * 2


async def test_the_same_id_with_another_body_is_a_409(gateway: Gateway) -> None:
    await gateway.submit(portal_body())

    response = await gateway.submit(portal_body(topic="data_migration"))

    assert response.status_code == 409
    assert "req-1" in response.json()["detail"] and "different body" in response.json()["detail"]
    assert len(await gateway.published()) == 1


async def test_a_failed_publish_is_a_503_and_a_retry_publishes(
        engine: Engine, kafka_settings: KafkaSettings, topics: TopicNames) -> None:
    publisher = FailingFirst(KafkaRequestPublisher(kafka_settings, topics))
    async with serve(engine, publisher, kafka_settings, topics) as gateway:
        failed = await gateway.submit(portal_body())
        assert (failed.status_code, failed.headers["Retry-After"]) == (503, "5")
        assert (await gateway.read("req-1")).json()["status"] == "accepted"
        assert await gateway.published() == []

        retried = await gateway.submit(portal_body())

        assert retried.status_code == 202
        assert [r.key for r in await gateway.published()] == [b"req-1"]


# --- POST /v1/requests: refused --------------------------------------------------------------


@pytest.mark.parametrize(("body", "fields"), [
    pytest.param(portal_body(tenant={"id": "t", "name": "C", "country": "XX"}),
                 ["tenant.country"], id="bad-country"),
    pytest.param({k: v for k, v in portal_body().items() if k != "topic"}
                 | {"requester": {"name": "Lin", "language": "zh-TW"}},
                 ["requester.email", "topic"], id="missing-fields"),
    pytest.param(portal_body(colour="blue"), ["colour"], id="unknown-field"),
    pytest.param(portal_body(request_id="has space", source="nowhere"),
                 ["request_id", "source"], id="bad-id-and-source"),
    pytest.param(portal_body(requester={"name": "Lin", "email": "mei@example.com",
                                        "language": "en", "timezone": "Mars/Olympus"}),
                 ["requester.timezone"], id="unknown-zone"),
    pytest.param(portal_body(partner={"id": "p", "name": "P", "email": "p@example.com"}),
                 ["partner"], id="partner-without-source-partner"),
    pytest.param([portal_body()], [""], id="not-an-object"),
])
async def test_an_invalid_body_is_a_422_naming_each_field(gateway: Gateway, body: Any,
                                                          fields: list[str]) -> None:
    response = await gateway.submit(body)

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert sorted({problem["field"] for problem in detail}) == fields
    assert all(problem["message"] for problem in detail)


async def test_a_body_that_is_not_json_is_a_422(gateway: Gateway) -> None:
    response = await gateway.client.post("/v1/requests", content=b'{"request_id": ',
                                         headers=auth(PORTAL))
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["field"] == "" and "JSON" in problem["message"]


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no-key"),
    pytest.param(auth("not-a-configured-key-at-all"), id="unknown-key"),
    pytest.param({"Authorization": f"Basic {PORTAL}"}, id="not-bearer"),
])
async def test_no_or_unknown_key_is_a_401(gateway: Gateway, headers: dict[str, str]) -> None:
    posted = await gateway.client.post("/v1/requests", json=portal_body(), headers=headers)
    read = await gateway.client.get("/v1/requests/req-1", headers=headers)

    for response in (posted, read):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await gateway.published() == []


@pytest.mark.parametrize(("key", "body", "why"), [
    pytest.param(PARTNER, partner_body(tenant_id="t-77"), "tenant 't-77' is not granted",
                 id="partner-other-tenant"),
    pytest.param(PARTNER, partner_body(partner_id="p-9", tenant_id="t-99"),
                 "belongs to partner 'p-7'", id="partner-other-partner-id"),
    pytest.param(PARTNER, portal_body(), "only submit requests with source 'partner'",
                 id="partner-non-partner-source"),
    pytest.param(PORTAL, partner_body(), "portal key may not submit", id="portal-as-partner"),
    pytest.param(OPS, portal_body(), "ops keys", id="ops-submitting"),
])
async def test_a_key_submitting_what_it_may_not_is_a_403(gateway: Gateway, key: str,
                                                         body: dict[str, Any], why: str) -> None:
    response = await gateway.submit(body, key=key)

    assert response.status_code == 403
    assert why in response.json()["detail"]
    assert (await gateway.read(body["request_id"], key=OPS)).status_code == 404
    assert await gateway.published() == []


async def test_a_body_over_64_kib_is_a_413(gateway: Gateway) -> None:
    oversized = b"{" + b" " * MAX_BODY_BYTES + b"}"

    declared = await gateway.client.post("/v1/requests", content=oversized, headers=auth(PORTAL))

    async def undeclared_chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for start in range(0, len(oversized), 8192):
            yield oversized[start:start + 8192]

    streamed = await gateway.client.post("/v1/requests", content=undeclared_chunks(),
                                         headers=auth(PORTAL))
    assert (declared.status_code, streamed.status_code) == (413, 413)


async def test_a_body_of_exactly_64_kib_is_accepted(gateway: Gateway) -> None:
    compact = json.dumps(portal_body()).encode()
    padded = compact + b" " * (MAX_BODY_BYTES - len(compact))

    response = await gateway.client.post("/v1/requests", content=padded, headers=auth(PORTAL))

    assert response.status_code == 202


# --- GET /v1/requests/{id} -------------------------------------------------------------------


async def test_an_unknown_request_is_a_404(gateway: Gateway) -> None:
    response = await gateway.read("never-sent")
    assert response.status_code == 404
    assert "never-sent" in response.json()["detail"]


async def test_the_status_shows_the_timeline_as_the_request_advances(gateway: Gateway) -> None:
    await gateway.submit(portal_body())
    gateway.store.advance("req-1", "routed", T0 + timedelta(minutes=1),
                          detail={"reasons": ["in_region"]}, center_id="taipei")

    status = (await gateway.read("req-1")).json()

    assert (status["status"], status["center_id"], status["meeting"]) == (
        "routed", "taipei", None)
    assert status["timeline"] == [
        {"status": "accepted", "at": "2026-03-02T01:00:00Z", "detail": None},
        {"status": "routed", "at": "2026-03-02T01:01:00Z", "detail": {"reasons": ["in_region"]}},
    ]


async def test_a_dead_lettered_request_reads_as_rejected_with_its_reason(
        gateway: Gateway) -> None:
    await gateway.submit(portal_body())
    error = {"error_class": "InvalidMessage", "message": "tenant.country: unknown"}
    gateway.store.advance("req-1", "deadlettered", T0 + timedelta(minutes=1), detail=error)

    status = (await gateway.read("req-1")).json()

    assert status["status"] == "rejected"
    assert status["timeline"][-1] == {"status": "rejected", "at": "2026-03-02T01:01:00Z",
                                      "detail": error}


@pytest.mark.parametrize(("key", "request_id", "expected"), [
    pytest.param(PARTNER, "req-p", 200, id="partner-own-request"),
    pytest.param(OTHER_PARTNER, "req-p", 403, id="other-partner"),
    pytest.param(PARTNER, "req-1", 403, id="partner-reading-portal-request"),
    pytest.param(PORTAL, "req-p", 200, id="portal-reads-all"),
    pytest.param(OPS, "req-p", 200, id="ops-reads-all"),
])
async def test_who_may_read_a_request(gateway: Gateway, key: str, request_id: str,
                                      expected: int) -> None:
    await gateway.submit(portal_body())
    await gateway.submit(partner_body(), key=PARTNER)

    response = await gateway.read(request_id, key=key)

    assert response.status_code == expected
    if expected == 403:
        assert "partner" in response.json()["detail"]


async def test_a_partner_whose_tenant_grant_was_withdrawn_may_not_read(
        gateway: Gateway) -> None:
    await gateway.submit(partner_body(tenant_id="t-43"), key=PARTNER)
    narrower = [k | {"tenants": ["t-42"]} if k["key"] == PARTNER else k for k in KEYS]
    publisher = KafkaRequestPublisher(gateway.kafka, gateway.topics)
    async with serve(gateway.engine, publisher, gateway.kafka, gateway.topics,
                     keys=narrower) as restarted:
        response = await restarted.read("req-p", key=PARTNER)

    assert response.status_code == 403
    assert "tenant 't-43' is not granted" in response.json()["detail"]


# --- operations ------------------------------------------------------------------------------


async def test_healthz_is_ok_when_database_and_broker_answer(gateway: Gateway) -> None:
    response = await gateway.client.get("/healthz")
    assert (response.status_code, response.json()) == (
        200, {"status": "ok", "database": "ok", "broker": "ok"})


async def test_healthz_is_503_when_the_database_is_unreachable(
        tmp_path: Path, engine: Engine, kafka_settings: KafkaSettings,
        topics: TopicNames) -> None:
    missing = create_engine_for(f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")
    async with serve(engine, KafkaRequestPublisher(kafka_settings, topics), kafka_settings,
                     topics, store=RequestStore(missing)) as gateway:
        response = await gateway.client.get("/healthz")
    assert (response.status_code, response.json()) == (
        503, {"status": "degraded", "database": "unavailable", "broker": "ok"})


async def test_metrics_count_requests_by_route_template_and_submissions_by_source(
        gateway: Gateway) -> None:
    await gateway.submit(portal_body())
    await gateway.submit(portal_body())
    await gateway.submit(partner_body(), key=PARTNER)
    await gateway.read("req-1")
    await gateway.read("unknown")

    response = await gateway.client.get("/metrics")

    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for sample in [
        'fasttrack_http_requests_total{method="POST",route="/v1/requests",status="202"} 3.0',
        'fasttrack_http_requests_total{method="GET",route="/v1/requests/{id}",status="200"} 1.0',
        'fasttrack_http_requests_total{method="GET",route="/v1/requests/{id}",status="404"} 1.0',
        'fasttrack_requests_submitted_total{outcome="created",source="admin_center"} 1.0',
        'fasttrack_requests_submitted_total{outcome="duplicate",source="admin_center"} 1.0',
        'fasttrack_requests_submitted_total{outcome="created",source="partner"} 1.0',
    ]:
        assert sample in text, sample
    assert "req-1" not in text and "t-42" not in text


async def test_logs_name_the_request_but_no_person(gateway: Gateway) -> None:
    with structlog.testing.capture_logs() as logs:
        await gateway.submit(partner_body(), key=PARTNER)

    assert [(e["event"], e["request_id"]) for e in logs] == [("request_accepted", "req-p")]
    text = repr(logs)
    for personal in ("Lin Mei", "mei@example.com", "Fabrikam", "ops@fabrikam.example.com"):
        assert personal not in text


async def test_openapi_documents_the_endpoints_the_help_request_and_bearer_auth(
        gateway: Gateway) -> None:
    spec = (await gateway.client.get("/openapi.json")).json()

    assert {"/v1/requests", "/v1/requests/{id}", "/healthz", "/metrics"} <= set(spec["paths"])
    submit = spec["paths"]["/v1/requests"]["post"]
    schema = submit["requestBody"]["content"]["application/json"]["schema"]
    assert schema["title"] == "HelpRequest v1"
    assert {"request_id", "tenant", "requester", "partner"} <= set(schema["properties"])
    assert set(submit["responses"]) == {"202", "401", "403", "409", "413", "422", "503"}
    assert submit["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InvalidBody"}
    read = spec["paths"]["/v1/requests/{id}"]["get"]
    assert read["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RequestStatusBody"}
    scheme = spec["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert submit["security"] == read["security"] == [{"bearer": []}]


# --- FASTTRACK_API_KEYS ----------------------------------------------------------------------


def test_keys_load_from_inline_json_a_json_file_and_a_yaml_file(tmp_path: Path) -> None:
    json_file = tmp_path / "keys.json"
    json_file.write_text(json.dumps(KEYS))
    yaml_file = tmp_path / "keys.yaml"
    yaml_file.write_text("- {name: portal, key: portal-key-0123456789, kind: portal}\n"
                         "- name: fabrikam\n  key: partner-p7-key-0123456789\n"
                         "  kind: partner\n  partner_id: p-7\n  tenants: [t-42]\n")

    for source in (json.dumps(KEYS), str(json_file), str(yaml_file)):
        ring = load_api_keys(source)
        partner = ring.lookup(PARTNER)
        assert partner is not None and partner.kind is KeyKind.PARTNER
        assert partner.partner_id == "p-7" and "t-42" in partner.tenants
        assert ring.lookup("partner-p7-key-012345678") is None


@pytest.mark.parametrize(("entries", "message"), [
    pytest.param([{"name": "acme", "key": "k" * 20, "kind": "partner", "tenants": ["t"]}],
                 "entry 1 ('acme'): partner_id: required for partner keys", id="no-partner-id"),
    pytest.param([KEYS[0], {"name": "b", "key": "k" * 20, "kind": "partner",
                            "partner_id": "p"}],
                 "entry 2 ('b'): tenants: partner keys need at least one tenant", id="no-tenants"),
    pytest.param([{"name": "c", "key": "short", "kind": "portal"}],
                 "entry 1 ('c'): key: String should have at least 16 characters", id="short-key"),
    pytest.param([{"name": "d", "key": "k" * 20, "kind": "admin"}], "entry 1 ('d'): kind:",
                 id="unknown-kind"),
    pytest.param([KEYS[0], KEYS[0] | {"name": "again"}], "'again' reuses the key of 'portal'",
                 id="same-key-twice"),
    pytest.param([KEYS[0], KEYS[1] | {"name": "portal"}], "duplicate key names ['portal']",
                 id="same-name-twice"),
    pytest.param([], "must be a non-empty list", id="empty"),
    pytest.param([{"name": "e", "key": "k" * 20, "kind": "portal", "tenants": ["t-1"]}],
                 "entry 1 ('e'): partner_id and tenants: only for partner keys",
                 id="portal-with-tenants"),
])
def test_invalid_key_entries_are_named(entries: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InvalidApiKeys) as raised:
        load_api_keys(json.dumps(entries))
    assert message in str(raised.value)
    assert "FASTTRACK_API_KEYS" in str(raised.value)


def test_a_portal_key_in_the_contracts_full_shape_loads() -> None:
    full = {"name": "portal", "key": "portal-key-0123456789", "kind": "portal",
            "partner_id": None, "tenants": []}
    key = load_api_keys(json.dumps([full])).lookup(full["key"])
    assert key is not None and key.kind is KeyKind.PORTAL and key.tenants == frozenset()


def test_a_missing_keys_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidApiKeys, match=r"cannot read API keys file .*nope\.yaml"):
        load_api_keys(str(tmp_path / "nope.yaml"))


def test_a_dev_key_is_a_random_portal_key_that_round_trips() -> None:
    key, other = generate_dev_key(), generate_dev_key()
    assert key.kind is KeyKind.PORTAL and key.key != other.key and len(key.key) >= 32
    assert key.key not in repr(key)
    assert load_api_keys(dump_api_keys([key])).lookup(key.key) == key
