"""Cancel and reschedule over HTTP (DELETE /v1/requests/{id}, POST .../reschedule), with the
invites they send parsed back: same UID, a higher SEQUENCE, METHOD CANCEL or REQUEST.

Requests are taken to ``invited`` by the pipeline's own stages, called in process (no broker
needed for that); the gateway is the real app with the lifecycle routes mounted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from icalendar import Calendar

from consumers.envelope import Origin
from services.api_keys import load_api_keys
from services.bootstrap import Runtime, build_runtime
from services.gateway import create_gateway
from services.settings import Settings

PORTAL = "portal-key-0123456789abcdef"
PARTNER = "partner-key-0123456789abcdef"
KEYS = json.dumps([
    {"name": "portal", "key": PORTAL, "kind": "portal"},
    {"name": "fabrikam", "key": PARTNER, "kind": "partner", "partner_id": "p-1",
     "tenants": ["t-other"]},
])


class Unpublished:
    """The gateway's publisher port, unused here: changes go through the lifecycle routes."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, request_id: str, body: dict[str, Any]) -> None: ...
    async def reachable(self) -> bool:
        return True


@dataclass
class Service:
    runtime: Runtime
    client: TestClient
    outbox: Path

    def invited(self, request_id: str, language: str = "de-DE", country: str = "DE") -> str:
        """Take a new request through submission, booking and invitation; return its UID."""
        body = {
            "request_id": request_id,
            "submitted_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            "source": "admin_center", "topic": "data_migration",
            "tenant": {"id": "t-1", "name": "Contoso", "country": country},
            "requester": {"name": "Alex", "email": "alex@contoso.example.com",
                          "language": language},
        }
        stages = self.runtime.stages()
        value = json.dumps(body).encode()
        for stage in (stages.submission, stages.booking, stages.invitation):
            (emit,) = stage.handle(value, Origin("test", 0, 0))
            value = emit.value
        status = self.runtime.store.status(request_id)
        assert status is not None and status.meeting is not None
        assert str(status.status) == "invited"
        return status.meeting.uid

    def invite(self, uid: str) -> Any:
        (event,) = Calendar.from_ical((self.outbox / f"{uid}.ics").read_bytes()).events
        calendar = Calendar.from_ical((self.outbox / f"{uid}.ics").read_bytes())
        return str(calendar["METHOD"]), int(event["SEQUENCE"]), str(event["UID"]), \
            event.decoded("DTSTART")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    settings = Settings(var_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'ft.db'}",
                        api_keys=KEYS)
    runtime = build_runtime(settings)
    app = create_gateway(settings, store=runtime.store, publisher=Unpublished(),
                         keys=load_api_keys(KEYS), clock=runtime.clock,
                         lifecycle=runtime.lifecycle())
    with TestClient(app) as client:
        yield Service(runtime, client, tmp_path / "outbox")
    runtime.engine.dispose()


def auth(key: str = PORTAL) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_cancel_frees_the_slot_and_sends_cancel_with_a_higher_sequence(service: Service) -> None:
    uid = service.invited("life-cancel")
    assert service.invite(uid)[:3] == ("REQUEST", 0, uid)

    answer = service.client.delete("/v1/requests/life-cancel", headers=auth())
    assert answer.status_code == 200, answer.text
    assert answer.json()["request"]["status"] == "cancelled"
    method, sequence, same_uid, _ = service.invite(uid)
    assert (method, sequence, same_uid) == ("CANCEL", 1, uid)
    assert service.runtime.store.status("life-cancel").meeting is None  # type: ignore[union-attr]

    again = service.client.delete("/v1/requests/life-cancel", headers=auth())
    assert again.status_code == 200, again.text  # cancelling twice is harmless
    assert service.invite(uid)[:2] == ("CANCEL", 1)


def test_reschedule_moves_the_meeting_and_updates_the_same_event(service: Service) -> None:
    uid = service.invited("life-move")
    _, _, _, first_start = service.invite(uid)
    earliest = (first_start + timedelta(days=7)).astimezone(UTC)
    window = {"earliest": earliest.isoformat(),
              "latest": (earliest + timedelta(days=5)).isoformat()}

    answer = service.client.post("/v1/requests/life-move/reschedule",
                                 json={"preferred_window": window}, headers=auth())
    assert answer.status_code == 200, answer.text
    meeting = answer.json()["request"]["meeting"]
    method, sequence, same_uid, start = service.invite(uid)
    assert (method, sequence, same_uid) == ("REQUEST", 1, uid)
    assert (meeting["uid"], meeting["sequence"]) == (uid, sequence)  # what the calendar holds
    assert start >= earliest and start != first_start

    cancelled = service.client.delete("/v1/requests/life-move", headers=auth())
    assert cancelled.status_code == 200
    assert service.invite(uid)[:2] == ("CANCEL", 2)  # SEQUENCE never goes back


@pytest.mark.parametrize(("request_id", "key", "status"), [
    pytest.param("life-auth", None, 401, id="no-key"),
    pytest.param("life-auth", "not-a-key-at-all-000", 401, id="unknown-key"),
    pytest.param("life-auth", PARTNER, 403, id="partner-not-its-tenant"),
    pytest.param("nobody", PORTAL, 404, id="unknown-request"),
])
def test_who_may_cancel(service: Service, request_id: str, key: str | None,
                        status: int) -> None:
    service.invited("life-auth")
    headers = auth(key) if key else {}
    assert service.client.delete(f"/v1/requests/{request_id}", headers=headers).status_code \
        == status
    assert str(service.runtime.store.status("life-auth").status) == "invited"  # type: ignore[union-attr]
