"""The center directory (DESIGN §5): policy, centers, their hours and specialists.

Loaded once from YAML and validated as a whole; an error names the file, the center and the field.
The objects are frozen, so routing and booking can cache on them.
"""

from __future__ import annotations

import importlib.resources
import itertools
from datetime import date, time, timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from scheduler.ledger import MAX_MEETING
from schemas.help_request import Region

SUPPORTED_LANGUAGES: tuple[str, ...] = (
    "zh-Hant", "zh-Hans", "en", "fr", "de", "it", "ja", "ko", "pt-BR", "es", "th", "vi",
)


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


class DirectoryInvalid(ValueError):
    """The directory file cannot be used; the message names the file, center and field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _supported_language(tag: str) -> str:
    if tag not in SUPPORTED_LANGUAGES:
        supported = ", ".join(SUPPORTED_LANGUAGES)
        raise ValueError(f"{tag!r} is not one of the supported languages {supported}")
    return tag


def _languages(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("needs at least one language")
    return tuple(_supported_language(tag) for tag in value)


Languages = Annotated[tuple[str, ...], AfterValidator(_languages)]


class Policy(_Frozen):
    meeting_minutes: Annotated[int, Field(ge=15, le=MAX_MEETING // timedelta(minutes=1))] = 60
    slot_step_minutes: Annotated[int, Field(ge=5, le=240)] = 30
    min_notice_minutes: Annotated[int, Field(ge=0, le=60 * 24 * 14)] = 240
    horizon_days: Annotated[int, Field(ge=1, le=366)] = 21
    max_wait_hours: Annotated[int, Field(ge=0, le=24 * 14)] = 24
    fallback_language: str | None = "en"

    @field_validator("fallback_language")
    @classmethod
    def _fallback(cls, value: str | None) -> str | None:
        return None if value is None else _supported_language(value)


class OpeningInterval(_Frozen):
    """One span of local wall-clock time within a day, start < end."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> OpeningInterval:
        try:
            first, second = text.split("-")
            start, end = time.fromisoformat(first.strip()), time.fromisoformat(second.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not an interval like '09:00-12:00'") from None
        if end <= start:
            raise ValueError(f"{text!r} ends before it starts (intervals cannot cross midnight)")
        return cls(start=start, end=end)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


class Specialist(_Frozen):
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
    name: Annotated[str, Field(min_length=1)]
    email: EmailStr
    languages: Languages
    max_meetings_per_day: Annotated[int, Field(ge=1, le=48)] = 4



class Delivery(BaseModel):
    """Which invite backend a center uses, and that backend's settings."""

    model_config = ConfigDict(extra="allow", frozen=True)
    backend: Literal["outbox", "smtp", "caldav", "ews", "graph"] = "outbox"

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Center(_Frozen):
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    name: Annotated[str, Field(min_length=1)]
    region: Region
    timezone: str
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    subdivision: str | None = None
    languages: Languages
    hours: dict[Weekday, tuple[OpeningInterval, ...]]
    closures: frozenset[date] = frozenset()
    mailbox: EmailStr
    delivery: Delivery = Delivery()
    specialists: tuple[Specialist, ...]

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value


    @field_validator("hours", mode="before")
    @classmethod
    def _hours(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {day: tuple(OpeningInterval.parse(t) if isinstance(t, str) else t
                           for t in spans or ())
                for day, spans in value.items()}

    @model_validator(mode="after")
    def _consistent(self) -> Center:
        for day, spans in self.hours.items():
            ordered = sorted(spans, key=lambda s: s.start)
            for before, after in itertools.pairwise(ordered):
                if after.start < before.end:
                    raise ValueError(f"hours.{day.value}: {before} overlaps {after}")
        if self.country not in holidays.list_supported_countries():
            raise ValueError(f"country {self.country!r} has no public-holiday calendar")
        try:
            holidays.country_holidays(self.country, subdiv=self.subdivision)
        except NotImplementedError as exc:
            raise ValueError(f"subdivision {self.subdivision!r}: {exc}") from None
        for specialist in self.specialists:
            extra = set(specialist.languages) - set(self.languages)
            if extra:
                raise ValueError(f"specialist {specialist.id}: languages {sorted(extra)} "
                                 f"are not offered by the center")
        return self

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def __hash__(self) -> int:
        return hash(self.id)


class CenterDirectory(_Frozen):
    """The whole directory: the booking policy and the centers."""

    policy: Policy = Policy()
    centers: tuple[Center, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> CenterDirectory:
        seen: set[str] = set()
        for center in self.centers:
            if center.id in seen:
                raise ValueError(f"center id {center.id!r} appears twice")
            seen.add(center.id)
        owners: dict[str, str] = {}  # specialist id -> the center it was first seen in
        for center in self.centers:
            for specialist in center.specialists:
                if specialist.id in owners:
                    owner = owners[specialist.id]
                    where = "twice in it" if owner == center.id else f"also in center {owner}"
                    raise ValueError(f"center {center.id}: specialist id {specialist.id!r} "
                                     f"appears {where}")
                owners[specialist.id] = center.id
        if not self.centers:
            raise ValueError("needs at least one center")
        return self

    @cached_property
    def by_id(self) -> dict[str, Center]:
        return {center.id: center for center in self.centers}

    @cached_property
    def _by_language(self) -> dict[str, tuple[Center, ...]]:
        return {tag: tuple(c for c in self.centers if tag in c.languages)
                for tag in SUPPORTED_LANGUAGES}

    def centers_speaking(self, language: str) -> tuple[Center, ...]:
        """The centers offering ``language``, in directory order."""
        return self._by_language.get(language, ())

    def center(self, center_id: str) -> Center:
        try:
            return self.by_id[center_id]
        except KeyError:
            raise LookupError(f"no center {center_id!r} in the directory") from None



def parse_directory(data: Any, source: str = "<directory>") -> CenterDirectory:
    """Validate already-loaded YAML/JSON data; errors name ``source``, the center and the field."""
    if not isinstance(data, dict):
        raise DirectoryInvalid(f"{source}: must be a mapping with 'policy' and 'centers'")
    try:
        return CenterDirectory.model_validate(data)
    except ValidationError as exc:
        raise DirectoryInvalid(_describe(exc, data, source)) from exc


def load_directory(path: str | Path) -> CenterDirectory:
    """Load and validate a directory YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DirectoryInvalid(f"{path}: cannot read the directory: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise DirectoryInvalid(f"{path}: not valid YAML: {exc}") from exc
    return parse_directory(data, str(path))


def default_directory_path() -> Path:
    return Path(str(importlib.resources.files("scheduler") / "data" / "default_directory.yaml"))


def default_directory() -> CenterDirectory:
    """The realistic sample directory shipped with the package (fictional people, example.com)."""
    return load_directory(default_directory_path())


def _describe(exc: ValidationError, data: dict[str, Any], source: str) -> str:
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "centers" and isinstance(loc[1], int):
            centers = data.get("centers") or []
            raw = centers[loc[1]] if loc[1] < len(centers) else None
            center_id = raw.get("id") if isinstance(raw, dict) else None
            where = f"center {center_id or '#' + str(loc[1])}: "
            loc = loc[2:]
        field = ".".join(str(p) for p in loc)
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required field is missing"
        lines.append(f"{source}: {where}{field + ': ' if field else ''}{message}")
    return "\n".join(lines)
