"""RequestCommand v1: the typed mirror of ``request_command.v1.json`` (portals' cancel and
reschedule commands on ``fasttrack.requests.commands``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.errors import FieldError, InvalidMessage, parse_message
from schemas.help_request import PreferredWindow, Timestamp

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]


class CommandKind(StrEnum):
    CANCEL = "cancel"
    RESCHEDULE = "reschedule"


class RequestCommand(BaseModel):
    """Cancel a request, or reschedule its meeting into ``preferred_window``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: CommandKind
    request_id: Identifier
    command_id: Identifier
    issued_at: Timestamp
    preferred_window: PreferredWindow | None = None

    @model_validator(mode="after")
    def _window_iff_reschedule(self) -> RequestCommand:
        if self.command is CommandKind.RESCHEDULE and self.preferred_window is None:
            raise ValueError("preferred_window is required for reschedule")
        if self.command is CommandKind.CANCEL and self.preferred_window is not None:
            raise ValueError("preferred_window is only allowed for reschedule")
        return self

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def parse_request_command(raw: bytes | str | dict[str, Any]) -> RequestCommand:
    """Decode and validate one RequestCommand v1; :class:`InvalidMessage` names each bad field."""
    command = parse_message(raw, RequestCommand)
    window = command.preferred_window
    if window and window.earliest and window.latest and window.latest <= window.earliest:
        raise InvalidMessage([FieldError("preferred_window.latest",
                                         "must be after preferred_window.earliest")])
    return command
