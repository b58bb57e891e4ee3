"""API keys for the HTTP gateway (DESIGN §11): who may call, and what each key may submit and read.

``FASTTRACK_API_KEYS`` is a path to a JSON or YAML file, or an inline JSON list, of
``{"name", "key", "kind": "portal" | "partner" | "ops", "partner_id", "tenants": [...]}``.
Keys are found by the sha256 of the presented key and confirmed with a constant-time comparison.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.help_request import HelpRequest, Source

MIN_KEY_LENGTH = 16


class KeyKind(StrEnum):
    PORTAL = "portal"  # upstream portals: submit admin_center / fasttrack_site requests, read all
    PARTNER = "partner"  # one partner: submit and read its own requests for granted tenants
    OPS = "ops"  # operators: read everything, submit nothing


class InvalidApiKeys(ValueError):
    """``FASTTRACK_API_KEYS`` cannot be read or an entry is invalid; the message names which."""


@dataclass(frozen=True)
class ApiKey:
    """One caller's key and what it is granted."""

    name: str
    key: str = field(repr=False)
    kind: KeyKind
    partner_id: str | None = None
    tenants: frozenset[str] = frozenset()

    def submit_denial(self, request: HelpRequest) -> str | None:
        """Why this key may not submit ``request``, or None when it may."""
        if self.kind is KeyKind.OPS:
            return "ops keys may read requests but not submit them"
        if self.kind is KeyKind.PORTAL:
            if request.source is Source.PARTNER:
                return "a portal key may not submit requests with source 'partner'"
            return None
        if request.source is not Source.PARTNER:
            return "a partner key may only submit requests with source 'partner'"
        assert request.partner is not None  # the model requires it for source partner
        return self._partner_denial(request.partner.id, request.tenant.id)

    def read_denial(self, source: str, partner_id: str | None, tenant_id: str) -> str | None:
        """Why this key may not read a stored request with these owners, or None when it may."""
        if self.kind is not KeyKind.PARTNER:
            return None
        if source != Source.PARTNER.value or partner_id is None:
            return "a partner key may only read requests submitted by its partner"
        return self._partner_denial(partner_id, tenant_id)

    def as_config(self) -> dict[str, Any]:
        """The entry as it is written in ``FASTTRACK_API_KEYS``."""
        entry: dict[str, Any] = {"name": self.name, "key": self.key, "kind": self.kind.value}
        if self.kind is KeyKind.PARTNER:
            entry |= {"partner_id": self.partner_id, "tenants": sorted(self.tenants)}
        return entry

    def _partner_denial(self, partner_id: str, tenant_id: str) -> str | None:
        if partner_id != self.partner_id:
            return f"this key belongs to partner {self.partner_id!r}, not {partner_id!r}"
        if tenant_id not in self.tenants:
            return f"tenant {tenant_id!r} is not granted to this partner key"
        return None


class ApiKeyRing:
    """The configured keys, looked up by the sha256 of the key presented."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._by_digest: dict[bytes, ApiKey] = {}
        for key in keys:
            digest = _digest(key.key)
            if digest in self._by_digest:
                raise InvalidApiKeys(f"api key {key.name!r} reuses the key of "
                                     f"{self._by_digest[digest].name!r}")
            self._by_digest[digest] = key

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, presented: str) -> ApiKey | None:
        """The key matching ``presented``, or None; the comparison takes constant time."""
        digest = _digest(presented)
        candidate = self._by_digest.get(digest)
        if candidate is None or not hmac.compare_digest(_digest(candidate.key), digest):
            return None
        return candidate


def load_api_keys(value: str) -> ApiKeyRing:
    """Parse ``FASTTRACK_API_KEYS``: an inline JSON list, or the path of a JSON or YAML file."""
    text = value.strip()
    if text.startswith("["):
        return parse_api_keys(_load_json(text, "FASTTRACK_API_KEYS"), "FASTTRACK_API_KEYS")
    path = Path(text).expanduser()
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidApiKeys(f"cannot read API keys file {str(path)!r}: {exc.strerror}") from exc
    if path.suffix.lower() == ".json":
        return parse_api_keys(_load_json(content, str(path)), str(path))
    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        raise InvalidApiKeys(f"{path}: not valid YAML: {exc}") from exc
    return parse_api_keys(data, str(path))


def parse_api_keys(data: Any, origin: str) -> ApiKeyRing:
    """Validate decoded entries; errors name ``origin``, the entry and the field."""
    if not isinstance(data, list) or not data:
        raise InvalidApiKeys(f"{origin}: must be a non-empty list of API key entries")
    keys = []
    for index, entry in enumerate(data):
        try:
            keys.append(_KeyEntry.model_validate(entry).to_api_key())
        except ValidationError as exc:
            raise InvalidApiKeys(_entry_errors(origin, index, entry, exc)) from exc
    names = [key.name for key in keys]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidApiKeys(f"{origin}: duplicate key names {duplicates}")
    try:
        return ApiKeyRing(keys)
    except InvalidApiKeys as exc:
        raise InvalidApiKeys(f"{origin}: {exc}") from None


def generate_dev_key() -> ApiKey:
    """A fresh random portal key for a development setup (``fasttrack up``)."""
    return ApiKey(name="dev", key=secrets.token_urlsafe(32), kind=KeyKind.PORTAL)


def dump_api_keys(keys: Iterable[ApiKey]) -> str:
    """Inline JSON for ``FASTTRACK_API_KEYS`` (e.g. to pass a dev key to a child process)."""
    return json.dumps([key.as_config() for key in keys])


class _KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=100)]
    key: Annotated[str, Field(min_length=MIN_KEY_LENGTH, max_length=512)]
    kind: KeyKind
    partner_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    tenants: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None

    @model_validator(mode="after")
    def _partner_fields(self) -> _KeyEntry:
        if self.kind is KeyKind.PARTNER:
            if self.partner_id is None:
                raise ValueError("partner_id: required for partner keys")
            if not self.tenants:
                raise ValueError("tenants: partner keys need at least one tenant")
        elif self.partner_id is not None or self.tenants:  # null and [] say "none"
            raise ValueError(f"partner_id and tenants: only for partner keys, not {self.kind}")
        return self

    def to_api_key(self) -> ApiKey:
        return ApiKey(self.name, self.key, self.kind, self.partner_id,
                      frozenset(self.tenants or ()))


def _entry_errors(origin: str, index: int, entry: Any, exc: ValidationError) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    label = f"entry {index + 1}" + (f" ({name!r})" if isinstance(name, str) else "")
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return f"{origin}: {label}: " + "; ".join(problems)


def _load_json(text: str, origin: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidApiKeys(f"{origin}: not valid JSON: {exc}") from exc


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()
