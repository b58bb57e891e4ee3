"""Event payloads on the topics after intake (DESIGN §3). Plain JSON, UTC timestamps as ``...Z``."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from schemas.help_request import HelpRequest


def utc_z(value: datetime) -> str:
    """``2026-03-02T01:00:00Z``: the one timestamp form on the wire."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _in_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


#: Read in any offset, held and written in UTC. A validator of these fields alone: one on every
#: field of every event ran for each string and list too, 85 calls a request through the stages.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_in_utc),
                        PlainSerializer(utc_z, return_type=str)]


class Reason(StrEnum):
    """Why a routing or booking decision came out as it did."""

    IN_REGION = "in_region"
    FOLLOW_THE_SUN = "follow_the_sun"
    OUT_OF_REGION = "out_of_region"
    LANGUAGE_FALLBACK = "language_fallback"
    UNSUPPORTED_LANGUAGE = "unsupported_language"
    NO_CENTER_FOR_LANGUAGE = "no_center_for_language"
    CLOSED_WITHIN_HORIZON = "closed_within_horizon"
    OUTSIDE_WINDOW = "outside_window"
    WINDOW_UNAVAILABLE = "window_unavailable"
    CAPACITY = "capacity"
    NO_CAPACITY = "no_capacity"


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=False)


class Rejection(_Event):
    center_id: str
    reason: Reason


class Candidate(_Event):
    """A center that offers the language and opens within the horizon."""

    center_id: str
    earliest_start: UtcDatetime


class RoutingDecision(_Event):
    """The routing policy's answer, explaining itself (DESIGN §6).

    ``candidates`` are every center that can start within the horizon, by (earliest start, id);
    ``not_before``/``not_after`` are the search window the booker must honour (``not_after`` is
    None when the request gave no latest bound or it had to be dropped).
    """

    request_id: str
    center_id: str | None
    language: str | None
    earliest_start: UtcDatetime | None
    reasons: list[Reason]
    rejected: list[Rejection] = Field(default_factory=list)
    candidates: list[Candidate] = Field(default_factory=list)
    not_before: UtcDatetime | None = None
    not_after: UtcDatetime | None = None
    decided_at: UtcDatetime

    def contract_dict(self) -> dict[str, Any]:
        """Exactly the keys of the ``fasttrack route`` contract."""
        data = self.to_json_dict()
        return {k: data[k] for k in ("request_id", "center_id", "language", "earliest_start",
                                     "reasons", "rejected")}


class RequestRouted(_Event):
    """Value on ``fasttrack.requests.routed``: the request and where it goes."""

    request: HelpRequest
    decision: RoutingDecision


class Meeting(_Event):
    """One booked meeting: a specialist's slot at a center for one request."""

    request_id: str
    center_id: str
    specialist_id: str
    language: str
    start: UtcDatetime
    end: UtcDatetime
    revision: int = 1
    uid: str
    join_url: str | None = None

    @model_validator(mode="after")
    def _ends_after_start(self) -> Meeting:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class MeetingBooked(_Event):
    """Value on ``fasttrack.meetings.booked``."""

    request: HelpRequest
    meeting: Meeting
    reasons: list[Reason] = Field(default_factory=list)
    booked_at: UtcDatetime


class RequestEscalated(_Event):
    """Value on ``fasttrack.requests.escalated``: could not be routed or booked, and why."""

    request_id: str
    stage: Literal["routing", "booking", "delivery", "sla"]
    reasons: list[Reason]
    detail: str
    request: HelpRequest | None = None
    decision: RoutingDecision | None = None
    escalated_at: UtcDatetime


class InviteDelivered(_Event):
    """Value on ``fasttrack.invites.delivered``: one delivery attempt's outcome."""

    request_id: str
    backend: str
    uid: str
    sequence: int
    method: Literal["REQUEST", "CANCEL"]
    status: Literal["delivered", "failed"]
    location: str | None = None
    detail: str | None = None
    delivered_at: UtcDatetime
