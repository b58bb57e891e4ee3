"""Reading one backend's settings from a center's ``delivery`` entry (DESIGN §5).

Every backend describes its settings as a :class:`BackendSettings` model, and
:func:`parse_settings` reads a center's entry into it, so a missing, mistyped or unknown key
stops the worker at start with a message that names ``delivery.<key>``, instead of being
ignored until the first invite.

Secrets never sit in the directory YAML: a setting such as ``password_env`` names an environment
variable, and the composition root hands the environment in as a mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

#: Keys of a ``delivery`` entry that are not a backend's own: which backend, and the meeting
#: link, which the booker reads (``services.bootstrap.join_url``).
SHARED_KEYS = frozenset({"backend", "join_url_template"})


class BackendSettings(BaseModel):
    """A backend's own keys of a ``delivery`` entry; any other key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_Settings = TypeVar("_Settings", bound=BackendSettings)


class DeliverySettingsInvalid(ValueError):
    """A center's delivery settings cannot configure the backend; the message names the field."""


def parse_settings(model: type[_Settings], settings: Mapping[str, Any], backend: str, *,
                   invalid: type[DeliverySettingsInvalid] = DeliverySettingsInvalid) -> _Settings:
    """Validate ``settings`` (less :data:`SHARED_KEYS`) against ``model``; raises ``invalid``
    with every problem, each naming ``delivery.<field>``."""
    own = {key: value for key, value in settings.items() if key not in SHARED_KEYS}
    try:
        return model.model_validate(own)
    except ValidationError as exc:
        problems = "; ".join(_problem(error, model, backend) for error in exc.errors())
        raise invalid(f"{backend}: {problems}") from None


def _problem(error: ErrorDetails, model: type[BackendSettings], backend: str) -> str:
    field = f"delivery.{'.'.join(str(part) for part in error['loc'])}"
    if error["type"] != "extra_forbidden":
        return f"{field}: {error['msg']}"
    if not model.model_fields:
        return f"{field}: the {backend} backend takes no settings of its own"
    known = ", ".join(sorted(model.model_fields))
    return f"{field}: not a setting of the {backend} backend (its settings: {known})"


def secret_from(env: Mapping[str, str], variable: str | None, backend: str, field: str, *,
                invalid: type[DeliverySettingsInvalid] = DeliverySettingsInvalid) -> str | None:
    """The value of the environment variable named by setting ``field``; None when unnamed.
    Raises ``invalid`` when the variable is unset or empty."""
    if variable is None:
        return None
    value = env.get(variable)
    if not value:
        state = "is not set" if value is None else "is empty"
        raise invalid(f"{backend}: delivery.{field}: environment variable {variable!r} {state}")
    return value
