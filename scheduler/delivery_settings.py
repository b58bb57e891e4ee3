"""Reading one backend's settings from a center's ``delivery`` entry (DESIGN §5).

Secrets never sit in the directory YAML: a setting such as ``password_env`` names an environment
variable, and the composition root hands the environment in as a mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

_Settings = TypeVar("_Settings", bound=BaseModel)


class DeliverySettingsInvalid(ValueError):
    """A center's delivery settings cannot configure the backend; the message names the field."""


def parse_settings(model: type[_Settings], settings: Mapping[str, Any],
                   backend: str) -> _Settings:
    """Validate ``settings`` against ``model``; errors name ``delivery.<field>``."""
    try:
        return model.model_validate(dict(settings))
    except ValidationError as exc:
        problems = "; ".join(
            f"delivery.{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors())
        raise DeliverySettingsInvalid(f"{backend}: {problems}") from None


def secret_from(env: Mapping[str, str], variable: str | None, backend: str,
                field: str) -> str | None:
    """The value of the environment variable named by setting ``field``; None when unnamed."""
    if variable is None:
        return None
    try:
        return env[variable]
    except KeyError:
        raise DeliverySettingsInvalid(
            f"{backend}: delivery.{field}: environment variable {variable!r} is not set"
        ) from None
