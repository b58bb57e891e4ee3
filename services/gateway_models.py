"""The gateway's wire shapes: what its endpoints answer, for OpenAPI and response validation."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

PublicStatus = Literal["accepted", "routed", "booked", "invited", "escalated", "cancelled",
                       "rejected"]


class Accepted(BaseModel):
    request_id: str
    status: Literal["accepted"]
    status_url: str


class MeetingBody(BaseModel):
    start: str
    end: str
    specialist_id: str
    join_url: str | None
    uid: str
    sequence: int = Field(description="the iCalendar SEQUENCE of the meeting's invite (0 for "
                                      "the first, higher after each change), as in its .ics")


class TimelineEntryBody(BaseModel):
    status: PublicStatus
    at: str
    detail: dict[str, Any] | None


class RequestStatusBody(BaseModel):
    request_id: str
    status: PublicStatus
    center_id: str | None
    meeting: MeetingBody | None
    timeline: list[TimelineEntryBody]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unavailable"]
    broker: Literal["ok", "unavailable"]


class FieldProblem(BaseModel):
    field: str
    message: str


class InvalidBody(BaseModel):
    detail: list[FieldProblem]


class Problem(BaseModel):
    detail: str
