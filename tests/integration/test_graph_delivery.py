"""Microsoft Graph delivery at the HTTP layer: a fake Graph behind httpx.MockTransport.

The fake answers with the JSON shapes of Microsoft's documentation (token endpoint, create event
with a Teams meeting, list events with an extended-property filter, PATCH, cancel, getSchedule,
error bodies) and records every request, so the tests assert on what was sent.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
import pytest

from scheduler.delivery import DeliveryFailed, Invite, Method
from scheduler.directory import Center
from scheduler.graph_delivery import (
    SEQUENCE_PROPERTY,
    UID_PROPERTY,
    GraphDelivery,
    GraphSettingsInvalid,
    GraphThrottled,
)
from scheduler.invites import build_imip_message, build_invite
from schemas.events import Meeting
from schemas.help_request import HelpRequest

NOW = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ORGANIZER = "fasttrack.tokyo@example.com"
UID = "8d1c4d0e-0b7e-4c55-a3a5-9f7f2c1d0e11@fasttrack.example.com"
START = datetime(2026, 3, 10, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo
JOIN_URL = ("https://teams.microsoft.com/l/meetup-join/19%3ameeting_NzM5OTEyZjAtYzI2Ny00"
            "%40thread.v2/0?context=%7b%22Tid%22%3a%2272f988bf%22%7d")


# -- builders -----------------------------------------------------------------------------------


def make_center() -> Center:
    return Center.model_validate({
        "id": "tokyo", "name": "FastTrack Center Tokyo", "region": "APAC",
        "timezone": "Asia/Tokyo", "country": "JP", "languages": ["ja", "en"],
        "hours": {"mon": ["09:00-17:30"]}, "mailbox": ORGANIZER,
        "specialists": [{"id": "tyo-01", "name": "佐藤 花子", "email": "hanako.sato@example.com",
                         "languages": ["ja", "en"]}],
    })


def make_request(partner: bool = True) -> HelpRequest:
    data: dict[str, Any] = {
        "request_id": "req-0042", "submitted_at": "2026-02-27T08:00:00Z",
        "source": "partner" if partner else "admin_center",
        "tenant": {"id": "tenant-1", "name": "Contoso 株式会社", "country": "JP"},
        "requester": {"name": "山田 太郎", "email": "taro.yamada@contoso.example",
                      "language": "ja"},
        "topic": "core_onboarding",
    }
    if partner:
        data["partner"] = {"id": "partner-1", "name": "Fabrikam",
                           "email": "partner@fabrikam.example"}
    return HelpRequest.model_validate(data)


def make_invite(sequence: int = 0, method: Method = "REQUEST", *,
                start: datetime = START) -> Invite:
    center, request = make_center(), make_request()
    meeting = Meeting(request_id=request.request_id, center_id=center.id, specialist_id="tyo-01",
                      language="ja", start=start, end=start + timedelta(hours=1),
                      revision=sequence + 1, uid=UID)
    ics = build_invite(meeting, request, center, sequence=sequence, method=method, now=NOW)
    email = build_imip_message(ics, meeting, request, center, method=method, now=NOW)
    return Invite(meeting=meeting, request=request, center=center, sequence=sequence,
                  method=method, ics=ics, email=email)


# -- the fake Graph -----------------------------------------------------------------------------


def graph_error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"error": {
        "code": code, "message": message,
        "innerError": {"date": "2026-03-01T00:00:00", "request-id": str(uuid.uuid4())}}})


@dataclass
class FakeGraph:
    """Enough of Graph and the identity platform to hold one organizer's calendar."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    schedule: list[dict[str, Any]] = field(default_factory=list)
    search_lags: bool = False
    #: (method, path regex) -> what to do instead, once: a response, or an exception to raise
    #: after handling the request normally (the server did it, the answer was lost).
    faults: list[tuple[str, str, httpx.Response | Exception]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = unquote(request.url.path)
        for fault in self.faults:
            method, pattern, outcome = fault
            if request.method == method and re.search(pattern, path):
                self.faults.remove(fault)
                if isinstance(outcome, httpx.Response):
                    return outcome
                self._handle(request, path)
                raise outcome
        return self._handle(request, path)

    def sent(self, method: str, pattern: str) -> list[httpx.Request]:
        return [r for r in self.requests
                if r.method == method and re.search(pattern, unquote(r.url.path))]

    def revoke_tokens(self) -> None:
        self.tokens = [f"revoked-{t}" for t in self.tokens]

    def _handle(self, request: httpx.Request, path: str) -> httpx.Response:
        if request.url.host == "login.microsoftonline.com":
            token = f"eyJ0eXAiOiJKV1Qi.token-{len(self.tokens) + 1}"
            self.tokens.append(token)
            return httpx.Response(200, json={"token_type": "Bearer", "expires_in": 3599,
                                             "ext_expires_in": 3599, "access_token": token})
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            return graph_error(401, "InvalidAuthenticationToken",
                               "Access token has expired or is not yet valid.")
        user = f"/v1.0/users/{ORGANIZER}"
        if request.method == "POST" and path == f"{user}/calendar/events":
            return self._create(json.loads(request.content))
        if request.method == "GET" and path == f"{user}/events":
            return self._search(parse_qs(request.url.query.decode())["$filter"][0])
        if request.method == "POST" and path == f"{user}/calendar/getSchedule":
            return httpx.Response(200, json={
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection("
                                  "microsoft.graph.scheduleInformation)",
                "value": self.schedule})
        match = re.fullmatch(rf"{user}/events/([^/]+)(/cancel)?", path)
        if match is None or match[1] not in self.events:
            return graph_error(404, "ErrorItemNotFound",
                               "The specified object was not found in the store.")
        event = self.events[match[1]]
        if match[2] and request.method == "POST":
            event["isCancelled"] = True
            return httpx.Response(202)
        if request.method == "PATCH":
            event.update(json.loads(request.content))
        return httpx.Response(200, json=event)

    def _create(self, body: dict[str, Any]) -> httpx.Response:
        for event in self.events.values():
            if event["transactionId"] == body["transactionId"]:
                return httpx.Response(201, json=event)
        event_id = f"AAMkAGI2TG93AAA{len(self.events) + 1}="
        self.events[event_id] = {
            "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users('{ORGANIZER}')"
                              "/calendar/events/$entity",
            "@odata.etag": 'W/"ZlnW4RIAV06KYYwlrfNZvQAALfZeRQ=="',
            "id": event_id, "iCalUId": f"040000008200E00074C5B7101A82E0080000000{event_id}",
            "isCancelled": False, "webLink": f"https://outlook.office365.com/owa/?itemid={event_id}",
            **body,
            "onlineMeeting": {"joinUrl": JOIN_URL} if body.get("isOnlineMeeting") else None,
        }
        return httpx.Response(201, json=self.events[event_id])

    def _search(self, odata_filter: str) -> httpx.Response:
        match = re.fullmatch(r"singleValueExtendedProperties/Any\(ep: ep/id eq '(.+)' "
                             r"and ep/value eq '(.+)'\)", odata_filter)
        assert match, odata_filter
        found = [] if self.search_lags else [
            {"id": e["id"], "isCancelled": e["isCancelled"], "onlineMeeting": e["onlineMeeting"],
             "singleValueExtendedProperties": [
                 p for p in e["singleValueExtendedProperties"] if p["id"] == SEQUENCE_PROPERTY]}
            for e in self.events.values()
            if {"id": match[1], "value": match[2]} in e.get("singleValueExtendedProperties", [])]
        return httpx.Response(200, json={"value": found})


@pytest.fixture
def graph() -> FakeGraph:
    return FakeGraph()


@pytest.fixture
def delivery(graph: FakeGraph) -> GraphDelivery:
    http = httpx.Client(transport=httpx.MockTransport(graph))
    return GraphDelivery(TENANT, "11111111-2222-3333-4444-555555555555", "s3cr3t~value",
                         organizer=ORGANIZER, http=http)


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


# -- the token ----------------------------------------------------------------------------------


def test_the_token_is_a_client_credentials_grant_for_graph(graph: FakeGraph,
                                                           delivery: GraphDelivery) -> None:
    delivery.send(make_invite())
    delivery.send(make_invite(1))

    (token_request,) = [r for r in graph.requests if r.url.host == "login.microsoftonline.com"]
    assert str(token_request.url) == (
        f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
    form = parse_qs(token_request.content.decode())
    assert form == {"grant_type": ["client_credentials"],
                    "client_id": ["11111111-2222-3333-4444-555555555555"],
                    "client_secret": ["s3cr3t~value"],
                    "scope": ["https://graph.microsoft.com/.default"]}
    graph_calls = [r for r in graph.requests if r.url.host == "graph.microsoft.com"]
    assert {r.headers["Authorization"] for r in graph_calls} == {f"Bearer {graph.tokens[0]}"}


def test_an_expired_token_is_refreshed_once_and_the_call_retried(
        graph: FakeGraph, delivery: GraphDelivery) -> None:
    delivery.send(make_invite())
    graph.revoke_tokens()

    receipt = delivery.send(make_invite(1, start=START + timedelta(days=1)))

    assert len(graph.tokens) == 2
    assert receipt.external_id in graph.events
    assert len(graph.sent("PATCH", r"/events/")) == 1


def test_a_token_refused_twice_is_a_permanent_failure(graph: FakeGraph,
                                                     delivery: GraphDelivery) -> None:
    graph.faults += [("GET", r"/events$", graph_error(401, "InvalidAuthenticationToken", "no")),
                     ("GET", r"/events$", graph_error(401, "InvalidAuthenticationToken", "no"))]

    with pytest.raises(DeliveryFailed) as failed:
        delivery.send(make_invite())

    assert failed.value.transient is False
    assert "401" in str(failed.value)
    assert len(graph.tokens) == 2


# -- create -------------------------------------------------------------------------------------


def test_a_new_meeting_is_a_teams_event_in_the_requesters_language(
        graph: FakeGraph, delivery: GraphDelivery) -> None:
    receipt = delivery.send(make_invite())

    (create,) = graph.sent("POST", r"/calendar/events$")
    sent = body(create)
    assert sent["subject"] == "Microsoft 365 FastTrack：コア オンボーディング"
    assert sent["body"]["contentType"] == "HTML"
    assert "山田 太郎" in sent["body"]["content"] and 'lang="ja"' in sent["body"]["content"]
    assert sent["start"] == {"dateTime": "2026-03-10T10:00:00", "timeZone": "Tokyo Standard Time"}
    assert sent["end"] == {"dateTime": "2026-03-10T11:00:00", "timeZone": "Tokyo Standard Time"}
    assert [(a["emailAddress"]["address"], a["type"]) for a in sent["attendees"]] == [
        ("taro.yamada@contoso.example", "required"), ("partner@fabrikam.example", "required"),
        ("hanako.sato@example.com", "required")]
    assert sent["isOnlineMeeting"] is True
    assert sent["onlineMeetingProvider"] == "teamsForBusiness"
    assert uuid.UUID(sent["transactionId"])
    assert {"id": UID_PROPERTY, "value": UID} in sent["singleValueExtendedProperties"]
    assert {"id": SEQUENCE_PROPERTY, "value": "0"} in sent["singleValueExtendedProperties"]
    assert receipt.join_url == JOIN_URL
    assert receipt.external_id == "AAMkAGI2TG93AAA1="
    assert receipt.location.endswith(f"/users/{ORGANIZER}/events/AAMkAGI2TG93AAA1=")


def test_a_timeout_after_the_event_was_made_does_not_make_a_second(
        graph: FakeGraph, delivery: GraphDelivery) -> None:
    graph.faults.append(("POST", r"/calendar/events$", httpx.ReadTimeout("timed out")))

    with pytest.raises(DeliveryFailed) as failed:
        delivery.send(make_invite())
    receipt = delivery.send(make_invite())

    assert failed.value.transient is True
    assert len(graph.events) == 1
    assert len(graph.sent("POST", r"/calendar/events$")) == 1
    assert receipt.join_url == JOIN_URL


def test_a_retried_create_the_search_missed_is_deduplicated_by_transaction_id(
        graph: FakeGraph, delivery: GraphDelivery) -> None:
    graph.search_lags = True
    graph.faults.append(("POST", r"/calendar/events$", httpx.ReadTimeout("timed out")))

    with pytest.raises(DeliveryFailed):
        delivery.send(make_invite())
    receipt = delivery.send(make_invite())

    first, second = graph.sent("POST", r"/calendar/events$")
    assert body(first)["transactionId"] == body(second)["transactionId"]
    assert len(graph.events) == 1
    assert receipt.external_id in graph.events and receipt.join_url == JOIN_URL


def test_the_same_invite_again_sends_nothing_new(graph: FakeGraph,
                                                delivery: GraphDelivery) -> None:
    first = delivery.send(make_invite())
    again = delivery.send(make_invite())

    assert again == first
    assert len(graph.sent("POST", r"/calendar/events$")) == 1
    assert graph.sent("PATCH", r"/events/") == []


def test_a_join_url_missing_from_the_create_answer_is_read_back(
        graph: FakeGraph, delivery: GraphDelivery) -> None:
    event_id = "AAMkAGI2TG93AAA1="
    graph.faults.append(("POST", r"/calendar/events$",
                         httpx.Response(201, json={"id": event_id, "onlineMeeting": None})))
    graph.events[event_id] = {"id": event_id, "onlineMeeting": {"joinUrl": JOIN_URL}}

    receipt = delivery.send(make_invite())

    (read,) = graph.sent("GET", r"/events/AAMkAGI2TG93AAA1=$")
    assert read.url.params["$select"] == "id,onlineMeeting"
    assert receipt.join_url == JOIN_URL


# -- update and cancel --------------------------------------------------------------------------


def test_a_change_patches_the_same_event(graph: FakeGraph, delivery: GraphDelivery) -> None:
    created = delivery.send(make_invite())

    receipt = delivery.send(make_invite(1, start=START + timedelta(days=1, hours=5)))

    (patch,) = graph.sent("PATCH", r"/events/")
    assert unquote(patch.url.path).endswith(f"/events/{created.external_id}")
    sent = body(patch)
    assert sent["start"] == {"dateTime": "2026-03-11T15:00:00", "timeZone": "Tokyo Standard Time"}
    assert sent["singleValueExtendedProperties"] == [{"id": SEQUENCE_PROPERTY, "value": "1"}]
    assert "transactionId" not in sent and "isOnlineMeeting" not in sent
    assert len(graph.events) == 1
    assert receipt.external_id == created.external_id and receipt.join_url == JOIN_URL


def test_an_older_change_arriving_late_is_ignored(graph: FakeGraph,
                                                 delivery: GraphDelivery) -> None:
    delivery.send(make_invite())
    delivery.send(make_invite(2, start=START + timedelta(days=2)))

    delivery.send(make_invite(1, start=START + timedelta(days=1)))

    assert len(graph.sent("PATCH", r"/events/")) == 1
    (event,) = graph.events.values()
    assert event["start"]["dateTime"] == "2026-03-12T10:00:00"


def test_cancel_posts_to_cancel_with_a_comment_in_the_requesters_language(
        graph: FakeGraph, delivery: GraphDelivery) -> None:
    created = delivery.send(make_invite())

    receipt = delivery.send(make_invite(1, "CANCEL"))
    delivery.send(make_invite(1, "CANCEL"))

    (cancel,) = graph.sent("POST", r"/cancel$")
    assert unquote(cancel.url.path).endswith(f"/events/{created.external_id}/cancel")
    comment = body(cancel)["Comment"]
    assert comment.startswith("山田 太郎")
    assert "キャンセル" in comment
    assert receipt.external_id == created.external_id


def test_cancelling_a_meeting_graph_never_had_sends_nothing(graph: FakeGraph,
                                                            delivery: GraphDelivery) -> None:
    delivery.send(make_invite(1, "CANCEL"))

    assert graph.sent("POST", r"/cancel$") == []


def test_an_invite_from_another_organizer_is_refused(delivery: GraphDelivery) -> None:
    with pytest.raises(DeliveryFailed) as failed:
        GraphDelivery(TENANT, "c", "s", organizer="other@example.com",
                      http=delivery._http).send(make_invite())
    assert failed.value.transient is False


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code", "retry_after"), [
    pytest.param(429, "ApplicationThrottled", "7", id="429-throttled"),
    pytest.param(503, "ServiceNotAvailable", "30", id="503-unavailable"),
    pytest.param(504, "UnknownError", None, id="504-gateway-timeout"),
])
def test_throttling_is_transient_and_says_when_to_retry(
        graph: FakeGraph, delivery: GraphDelivery, status: int, code: str,
        retry_after: str | None) -> None:
    headers = {"Retry-After": retry_after} if retry_after else {}
    graph.faults.append(("POST", r"/calendar/events$",
                         graph_error(status, code, "Too many requests", **headers)))

    with pytest.raises(GraphThrottled) as failed:
        delivery.send(make_invite())

    assert failed.value.transient is True
    assert failed.value.retry_after == (float(retry_after) if retry_after else None)
    if retry_after:
        assert f"retry after {retry_after} s" in str(failed.value)


@pytest.mark.parametrize(("status", "code"), [
    pytest.param(400, "ErrorInvalidRequest", id="400-bad-request"),
    pytest.param(403, "ErrorAccessDenied", id="403-forbidden"),
    pytest.param(404, "ErrorInvalidUser", id="404-unknown-mailbox"),
])
def test_client_errors_are_permanent(graph: FakeGraph, delivery: GraphDelivery, status: int,
                                     code: str) -> None:
    graph.faults.append(("POST", r"/calendar/events$", graph_error(status, code, "Denied")))

    with pytest.raises(DeliveryFailed) as failed:
        delivery.send(make_invite())

    assert failed.value.transient is False
    assert f"HTTP {status} {code}: Denied" in str(failed.value)


def test_a_connection_error_is_transient(graph: FakeGraph, delivery: GraphDelivery) -> None:
    graph.faults.append(("GET", r"/events$", httpx.ConnectError("connection refused")))

    with pytest.raises(DeliveryFailed) as failed:
        delivery.send(make_invite())

    assert failed.value.transient is True


# -- free/busy ----------------------------------------------------------------------------------


def pacific(wall: str) -> dict[str, str]:
    return {"dateTime": f"{wall}.0000000", "timeZone": "Pacific Standard Time"}


def item(status: str, start: str, end: str) -> dict[str, Any]:
    return {"isPrivate": False, "status": status, "subject": "Busy", "location": "",
            "start": pacific(start), "end": pacific(end)}


def test_busy_merges_blocking_items_in_utc_across_the_dst_change(
        graph: FakeGraph, delivery: GraphDelivery) -> None:
    # US clocks go forward at 02:00 on Sunday 2026-03-08: PST (UTC-8) before, PDT (UTC-7) after.
    graph.schedule = [
        {"scheduleId": "ana@example.com", "availabilityView": "2220002200",
         "scheduleItems": [
             item("busy", "2026-03-08T00:30:00", "2026-03-08T01:30:00"),
             item("oof", "2026-03-08T01:00:00", "2026-03-08T03:30:00"),
             item("free", "2026-03-08T05:00:00", "2026-03-08T06:00:00"),
             item("workingElsewhere", "2026-03-08T07:00:00", "2026-03-08T08:00:00"),
             item("tentative", "2026-03-09T09:00:00", "2026-03-09T10:00:00"),
         ],
         "workingHours": {"daysOfWeek": ["monday"], "startTime": "08:00:00.0000000",
                          "endTime": "17:00:00.0000000",
                          "timeZone": {"name": "Pacific Standard Time"}}},
        {"scheduleId": "ben@example.com", "availabilityView": "0000000000",
         "scheduleItems": []},
    ]
    start, end = datetime(2026, 3, 8, 0, 0, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC)

    busy = delivery.busy(["ana@example.com", "ben@example.com"], start, end)

    assert busy == {
        "ana@example.com": [
            (datetime(2026, 3, 8, 8, 30, tzinfo=UTC), datetime(2026, 3, 8, 10, 30, tzinfo=UTC)),
            (datetime(2026, 3, 9, 16, 0, tzinfo=UTC), datetime(2026, 3, 9, 17, 0, tzinfo=UTC)),
        ],
        "ben@example.com": [],
    }
    (request,) = graph.sent("POST", r"/calendar/getSchedule$")
    assert request.headers["Prefer"] == 'outlook.timezone="UTC"'
    assert body(request) == {
        "schedules": ["ana@example.com", "ben@example.com"], "availabilityViewInterval": 15,
        "startTime": {"dateTime": "2026-03-08T00:00:00", "timeZone": "UTC"},
        "endTime": {"dateTime": "2026-03-10T00:00:00", "timeZone": "UTC"}}


def test_busy_clamps_spans_to_the_window(graph: FakeGraph, delivery: GraphDelivery) -> None:
    graph.schedule = [{"scheduleId": "ana@example.com", "scheduleItems": [
        {"status": "busy", "start": {"dateTime": "2026-03-02T23:00:00.0000000", "timeZone": "UTC"},
         "end": {"dateTime": "2026-03-03T02:00:00.0000000", "timeZone": "UTC"}}]}]
    start = datetime(2026, 3, 3, 9, 0, tzinfo=make_center().zone)  # 00:00 UTC

    busy = delivery.busy(["ana@example.com"], start, start + timedelta(days=1))

    assert busy["ana@example.com"] == [(datetime(2026, 3, 3, 0, 0, tzinfo=UTC),
                                        datetime(2026, 3, 3, 2, 0, tzinfo=UTC))]
    (request,) = graph.sent("POST", r"/calendar/getSchedule$")
    assert body(request)["startTime"] == {"dateTime": "2026-03-03T00:00:00", "timeZone": "UTC"}


def test_a_schedule_graph_cannot_read_is_an_error(graph: FakeGraph,
                                                  delivery: GraphDelivery) -> None:
    graph.schedule = [{"scheduleId": "nobody@example.com", "error": {
        "message": "The requested user 'nobody@example.com' is invalid.",
        "responseCode": "ErrorInvalidUser"}}]

    with pytest.raises(DeliveryFailed, match="ErrorInvalidUser"):
        delivery.busy(["nobody@example.com"], START, START + timedelta(days=1))


# -- settings -----------------------------------------------------------------------------------

SETTINGS = {"tenant_id": TENANT, "client_id": "app-id", "client_secret_env": "FT_GRAPH_SECRET"}


def test_from_settings_reads_the_secret_from_the_named_variable(graph: FakeGraph) -> None:
    http = httpx.Client(transport=httpx.MockTransport(graph))
    delivery = GraphDelivery.from_settings(SETTINGS, {"FT_GRAPH_SECRET": "from-env"},
                                           organizer=ORGANIZER, http=http)

    delivery.send(make_invite())

    assert parse_qs(graph.requests[0].content.decode())["client_secret"] == ["from-env"]


@pytest.mark.parametrize(("settings", "env", "message"), [
    pytest.param({**SETTINGS, "tenant_id": ""}, {"FT_GRAPH_SECRET": "x"}, "delivery.tenant_id",
                 id="no-tenant"),
    pytest.param(SETTINGS, {}, "'FT_GRAPH_SECRET' is not set", id="secret-unset"),
    pytest.param({k: v for k, v in SETTINGS.items() if k != "client_secret_env"}, {},
                 "delivery.client_secret_env", id="no-secret-name"),
])
def test_from_settings_names_what_is_missing(settings: dict[str, str], env: dict[str, str],
                                             message: str) -> None:
    with pytest.raises(GraphSettingsInvalid, match=message):
        GraphDelivery.from_settings(settings, env, organizer=ORGANIZER)



def test_a_cancel_for_the_specialist_alone_is_refused_exchange_tells_them_itself(
        graph: FakeGraph, delivery: GraphDelivery) -> None:
    assert delivery.tells_removed_attendees
    alone = dataclasses.replace(make_invite(1, "CANCEL"), only_specialist=True)

    with pytest.raises(DeliveryFailed) as refused:
        delivery.send(alone)

    assert not refused.value.transient
    assert graph.requests == []
