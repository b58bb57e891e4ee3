"""HelpRequest v1: the typed mirror of ``help_request.v1.json``.

The JSON Schema file is the published contract; this model accepts and rejects exactly what it
does (``tests/unit/test_help_request_schema.py`` runs the same examples through both). Checks a
schema cannot express (the time zone exists, the window is not inverted) live in
:func:`semantic_errors` so the two stay equal.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import available_timezones

import pytz
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

from schemas.errors import FieldError, InvalidMessage, json_object, parse_message

RFC3339_PATTERN = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
COUNTRY_CODES: frozenset[str] = frozenset(pytz.country_names)


def _rfc3339_string(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not RFC3339_PATTERN.match(value):
        raise ValueError(
            "must be an RFC 3339 date-time with an offset, e.g. 2026-03-02T09:30:00+08:00")
    return value


def _country(value: Any) -> Any:
    if not isinstance(value, str) or value not in COUNTRY_CODES:  # a list is not hashable
        raise ValueError("must be an ISO 3166-1 alpha-2 country code, e.g. TW")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_string)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
#: Addresses that passed pydantic's email check, and what it made of them: a request's
#: addresses are checked again in every stage that reads it (the routed and booked events
#: carry it), and the check (``email_validator``'s domain rules) took 22 % of the booker's time
#: in a profile (docs/performance.md, round 15). A pure function of the text; forgotten all at
#: once when full. Addresses that fail are not kept, so they fail again with the same error.
_CHECKED_EMAILS: dict[str, str] = {}
_CHECKED_EMAILS_MAX = 4096


def _remembered_email(value: Any, check: ValidatorFunctionWrapHandler) -> Any:
    if type(value) is not str:
        return check(value)
    known = _CHECKED_EMAILS.get(value)
    if known is None:
        known = check(value)
        if len(_CHECKED_EMAILS) >= _CHECKED_EMAILS_MAX:
            _CHECKED_EMAILS.clear()
        _CHECKED_EMAILS[value] = known
    return known


Email = Annotated[EmailStr, WrapValidator(_remembered_email), Field(min_length=3, max_length=254)]


class Source(StrEnum):
    ADMIN_CENTER = "admin_center"
    FASTTRACK_SITE = "fasttrack_site"
    PARTNER = "partner"


class Region(StrEnum):
    AMER = "AMER"
    EMEA = "EMEA"
    APAC = "APAC"


class Topic(StrEnum):
    CORE_ONBOARDING = "core_onboarding"
    SERVICE_ONBOARDING = "service_onboarding"
    DATA_MIGRATION = "data_migration"
    USER_ADOPTION = "user_adoption"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tenant(_Strict):
    id: Name
    name: Name
    country: Annotated[str, BeforeValidator(_country)]
    region: Region | None = None


class Requester(_Strict):
    name: Name
    email: Email
    language: Annotated[str, Field(pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")]
    timezone: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class Partner(_Strict):
    id: Name
    name: Name
    email: Email


class PreferredWindow(_Strict):
    earliest: Timestamp | None = None
    latest: Timestamp | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> PreferredWindow:
        if self.earliest is None and self.latest is None:
            raise ValueError("needs earliest, latest or both")
        return self


class HelpRequest(_Strict):
    """A customer's request for FastTrack onboarding help."""

    request_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
    submitted_at: Timestamp
    source: Source
    tenant: Tenant
    requester: Requester
    partner: Partner | None = None
    topic: Topic
    services: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=100)]], Field(max_length=50)
    ] = Field(default_factory=list)
    preferred_window: PreferredWindow | None = None
    notes: Annotated[str, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _partner_iff_source_partner(self) -> HelpRequest:
        if self.source is Source.PARTNER and self.partner is None:
            raise ValueError("partner is required when source is partner")
        if self.source is not Source.PARTNER and self.partner is not None:
            raise ValueError("partner is only allowed when source is partner")
        return self

    def to_json_dict(self) -> dict[str, Any]:
        """The wire form: JSON-ready, absent optionals left out."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


_ZONES: frozenset[str] | None = None


def semantic_errors(request: HelpRequest) -> list[FieldError]:
    """What the schema cannot say: an unknown IANA zone, an inverted preferred window."""
    window = request.preferred_window
    return _semantic(request.requester.timezone, window.earliest if window else None,
                     window.latest if window else None)


def _semantic(zone: object, earliest: datetime | None, latest: datetime | None,
              ) -> list[FieldError]:
    global _ZONES
    if _ZONES is None:
        _ZONES = frozenset(available_timezones())
    errors: list[FieldError] = []
    if isinstance(zone, str) and zone not in _ZONES:
        errors.append(FieldError("requester.timezone", f"unknown IANA time zone {zone!r}"))
    if earliest and latest and latest <= earliest:
        errors.append(FieldError("preferred_window.latest",
                                 "must be after preferred_window.earliest"))
    return errors


def _raw_semantic_errors(data: dict[str, Any]) -> list[FieldError]:
    """:func:`semantic_errors` on the request as received, for one the model refused on other
    grounds: every bad field is named at once."""
    requester, window = data.get("requester"), data.get("preferred_window")
    zone = requester.get("timezone") if isinstance(requester, dict) else None
    if not isinstance(window, dict):
        return _semantic(zone, None, None)
    return _semantic(zone, _instant(window.get("earliest")), _instant(window.get("latest")))


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str) or not RFC3339_PATTERN.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def parse_help_request(raw: bytes | str | dict[str, Any]) -> HelpRequest:
    """Decode and validate one HelpRequest v1 as received; :class:`InvalidMessage` names each
    bad field.

    Stricter than the model, as the published schema is: an optional field is left out, never
    ``null`` (the model takes ``None``, which the service's own events carry), and the partner
    rule names ``partner``.
    """
    data = json_object(raw)
    nulls = [FieldError(path, "must not be null: leave the field out")
             for path in _null_paths(data)]
    try:
        request = parse_message(data, HelpRequest)
    except InvalidMessage as exc:
        named = [_partner_named(e) for e in exc.errors]
        fields = {e.field for e in named}
        raise InvalidMessage(named + [e for e in [*nulls, *_raw_semantic_errors(data)]
                                      if e.field not in fields]) from exc
    errors = nulls + semantic_errors(request)
    if errors:
        raise InvalidMessage(errors)
    return request


def _null_paths(data: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in data.items():
        if value is None:
            paths.append(f"{prefix}{key}")
        elif isinstance(value, dict):
            paths.extend(_null_paths(value, f"{prefix}{key}."))
    return paths


def _partner_named(error: FieldError) -> FieldError:
    """The partner rule is checked on the whole request: name the field it is about."""
    if not error.field and error.message.startswith("partner "):
        return FieldError("partner", error.message)
    return error
