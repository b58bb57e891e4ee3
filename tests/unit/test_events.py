"""Event payloads hold and write every timestamp in UTC, whatever offset they were given."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from schemas.events import Candidate, InviteDelivered, Meeting, RoutingDecision

TAIPEI = ZoneInfo("Asia/Taipei")


@pytest.mark.parametrize("zone", [TAIPEI, timezone(timedelta(hours=-3, minutes=-30)), UTC],
                         ids=["zoneinfo", "fixed-offset", "utc"])
def test_a_timestamp_is_held_and_written_in_utc(zone: timezone | ZoneInfo) -> None:
    start = datetime(2026, 3, 2, 9, 0, tzinfo=zone)
    meeting = Meeting(request_id="r-1", center_id="taipei", specialist_id="tpe-01",
                      language="zh-Hant", start=start, end=start + timedelta(hours=1),
                      uid="u@fasttrack.example.com")
    assert meeting.start.tzinfo is UTC and meeting.start == start
    wire = json.loads(meeting.model_dump_json())
    assert wire["start"] == start.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert Meeting.model_validate_json(meeting.model_dump_json()) == meeting


def test_nested_and_optional_timestamps_are_in_utc_and_the_rest_untouched() -> None:
    local = datetime(2026, 3, 2, 9, 0, tzinfo=TAIPEI)
    decision = RoutingDecision.model_validate({
        "request_id": "r-1", "center_id": "taipei", "language": "zh-Hant",
        "earliest_start": local.isoformat(), "reasons": ["in_region"],
        "candidates": [{"center_id": "taipei", "earliest_start": local.isoformat()}],
        "not_before": local, "not_after": None, "decided_at": local})
    assert decision.earliest_start is not None and decision.earliest_start.tzinfo is UTC
    assert decision.candidates == [Candidate(center_id="taipei", earliest_start=local)]
    assert decision.candidates[0].earliest_start.tzinfo is UTC
    assert decision.not_before == local and decision.not_after is None
    assert decision.reasons == ["in_region"] and decision.center_id == "taipei"
    delivered = InviteDelivered(request_id="r-1", backend="outbox", uid="u", sequence=0,
                                method="REQUEST", status="delivered", delivered_at=local)
    assert delivered.to_json_dict()["delivered_at"] == "2026-03-02T01:00:00Z"
