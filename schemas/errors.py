"""Validation errors that name the field, for every boundary (CLI, HTTP, Kafka intake)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field: a dotted path (``tenant.country``), "" for the whole message."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class InvalidMessage(ValueError):
    """A message that does not satisfy its schema. ``errors`` lists every bad field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))

    @classmethod
    def from_pydantic(cls, exc: ValidationError) -> InvalidMessage:
        return cls([FieldError(_dotted(e["loc"]), _message(e)) for e in exc.errors()])


_Model = TypeVar("_Model", bound="BaseModel")


def json_object(raw: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """Decode JSON (bytes, text or an already-decoded object) that must be an object; raise
    :class:`InvalidMessage` when it is not."""
    try:
        data = json.loads(raw) if isinstance(raw, bytes | str) else raw
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage([FieldError("", f"not valid UTF-8 JSON: {exc}")]) from exc
    if not isinstance(data, dict):
        raise InvalidMessage([FieldError("", "must be a JSON object")])
    return data


def parse_message(raw: bytes | str | dict[str, Any], model: type[_Model]) -> _Model:
    """Decode JSON (bytes, text or an already-decoded object) into ``model``; raise
    :class:`InvalidMessage` naming each bad field."""
    from pydantic import ValidationError

    data = json_object(raw)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessage.from_pydantic(exc) from exc


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")
