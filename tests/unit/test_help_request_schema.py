"""The JSON Schema file (the published contract) and the pydantic model accept the same messages."""

from __future__ import annotations

import copy
import json
from importlib.resources import files
from typing import Any

import pytest
import pytz
from email_validator import EmailNotValidError, validate_email
from jsonschema import Draft202012Validator, FormatChecker

from schemas.errors import InvalidMessage
from schemas.help_request import parse_help_request

SCHEMA = json.loads((files("schemas") / "help_request.v1.json").read_text(encoding="utf-8"))

# The model checks emails with email-validator; the schema's consumers are told "format: email".
# Give jsonschema the same email rule so "agree" means agree, not "both lax somewhere".
_formats = FormatChecker()


@_formats.checks("email", raises=EmailNotValidError)
def _email(value: object) -> bool:
    return not isinstance(value, str) or bool(validate_email(value, check_deliverability=False))


VALIDATOR = Draft202012Validator(SCHEMA, format_checker=_formats)

VALID: dict[str, Any] = {
    "request_id": "req-2026.11:0001",
    "submitted_at": "2026-11-23T09:30:00+08:00",
    "source": "admin_center",
    "tenant": {"id": "tenant-42", "name": "Contoso Taiwan", "country": "TW"},
    "requester": {"name": "王小明", "email": "xiaoming@contoso.example.com", "language": "zh-TW"},
    "topic": "core_onboarding",
}


def variant(**changes: Any) -> dict[str, Any]:
    """VALID with dotted-path changes; a value of ... deletes the field."""
    data = copy.deepcopy(VALID)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = data
        for key in parents:
            target = target.setdefault(key, {})
        if value is ...:
            target.pop(last, None)
        else:
            target[last] = value
    return data


PARTNER = {"id": "p-7", "name": "Fabrikam Partners", "email": "desk@fabrikam.example.com"}

CASES = [
    pytest.param(VALID, True, id="minimal"),
    pytest.param(variant(source="partner", partner=PARTNER), True, id="partner-with-partner"),
    pytest.param(variant(tenant__region="APAC", requester__timezone="Asia/Taipei",
                         services=["Exchange Online", "Teams"], notes="請協助移轉信箱",
                         preferred_window={"earliest": "2026-11-25T01:00:00Z",
                                           "latest": "2026-11-28T10:00:00Z"}), True, id="full"),
    pytest.param(variant(submitted_at="2026-11-23T01:30:00Z"), True, id="utc-z"),
    pytest.param(variant(submitted_at="2026-11-23T01:30:00.125-03:00"), True, id="fraction"),
    pytest.param(variant(preferred_window={"latest": "2026-11-28T10:00:00Z"}), True,
                 id="window-latest-only"),
    pytest.param(variant(request_id="a" * 64), True, id="id-64-chars"),
    pytest.param(variant(notes="x" * 2000), True, id="notes-2000"),
    pytest.param(variant(request_id="a" * 65), False, id="id-65-chars"),
    pytest.param(variant(request_id=""), False, id="id-empty"),
    pytest.param(variant(request_id="has space"), False, id="id-space"),
    pytest.param(variant(request_id="ünï"), False, id="id-non-ascii"),
    pytest.param(variant(submitted_at="2026-11-23T09:30:00"), False, id="naive-datetime"),
    pytest.param(variant(submitted_at="2026-11-23"), False, id="date-only"),
    pytest.param(variant(submitted_at=1764000000), False, id="epoch-number"),
    pytest.param(variant(source="email"), False, id="unknown-source"),
    pytest.param(variant(source="partner"), False, id="partner-source-without-partner"),
    pytest.param(variant(partner=PARTNER), False, id="partner-without-partner-source"),
    pytest.param(variant(tenant__country="ZZ"), False, id="unknown-country"),
    pytest.param(variant(tenant__country="tw"), False, id="lowercase-country"),
    pytest.param(variant(tenant__region="LATAM"), False, id="unknown-region"),
    pytest.param(variant(tenant__id=...), False, id="tenant-id-missing"),
    pytest.param(variant(requester__email="not-an-email"), False, id="bad-email"),
    pytest.param(variant(requester__language="zh_TW"), False, id="underscore-language"),
    pytest.param(variant(requester__language=...), False, id="language-missing"),
    pytest.param(variant(topic="licensing"), False, id="unknown-topic"),
    pytest.param(variant(services=[""]), False, id="empty-service-name"),
    pytest.param(variant(services="Teams"), False, id="services-not-a-list"),
    pytest.param(variant(notes="x" * 2001), False, id="notes-2001"),
    pytest.param(variant(preferred_window={}), False, id="empty-window"),
    pytest.param(variant(preferred_window={"earliest": "tomorrow"}), False, id="window-not-date"),
    pytest.param(variant(extra="field"), False, id="unknown-top-level-field"),
    pytest.param(variant(tenant__extra="field"), False, id="unknown-nested-field"),
    pytest.param(variant(partner={"id": "p", "name": "n"}, source="partner"), False,
                 id="partner-email-missing"),
    pytest.param(variant(requester=...), False, id="requester-missing"),
    pytest.param(variant(tenant__country=["TW"]), False, id="country-a-list"),
    pytest.param(variant(tenant__country={}), False, id="country-an-object"),
    pytest.param(variant(partner=None), False, id="null-partner"),
    pytest.param(variant(tenant__region=None), False, id="null-region"),
    pytest.param(variant(requester__timezone=None), False, id="null-timezone"),
    pytest.param(variant(notes=None), False, id="null-notes"),
    pytest.param(variant(preferred_window=None), False, id="null-window"),
    pytest.param(variant(preferred_window={"earliest": None,
                                           "latest": "2026-11-28T10:00:00Z"}), False,
                 id="null-earliest"),
]


@pytest.mark.parametrize(("message", "valid"), CASES)
def test_schema_and_model_agree(message: dict[str, Any], valid: bool) -> None:
    schema_ok = VALIDATOR.is_valid(message)
    try:
        parse_help_request(message)
        model_ok = True
    except InvalidMessage:
        model_ok = False
    assert (schema_ok, model_ok) == (valid, valid)


def test_schema_itself_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(SCHEMA)


def test_country_enum_is_the_iso_3166_table() -> None:
    assert SCHEMA["properties"]["tenant"]["properties"]["country"]["enum"] == sorted(
        pytz.country_names)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        pytest.param(variant(tenant__country="ZZ"), "tenant.country", id="country"),
        pytest.param(variant(tenant__country=["TW"]), "tenant.country", id="country-a-list"),
        pytest.param(variant(notes=None), "notes", id="null-notes"),
        pytest.param(variant(preferred_window={"earliest": None,
                                               "latest": "2026-11-28T10:00:00Z"}),
                     "preferred_window.earliest", id="null-earliest"),
        pytest.param(variant(topic="licensing", tenant__region=None), "tenant.region",
                     id="null-beside-another-error"),
        pytest.param(variant(source="partner"), "partner", id="partner-required"),
        pytest.param(variant(partner=PARTNER), "partner", id="partner-forbidden"),
        pytest.param(variant(requester__email="x"), "requester.email", id="email"),
        pytest.param(variant(extra=1), "extra", id="unknown"),
        pytest.param(variant(requester__timezone="Mars/Olympus"), "requester.timezone", id="zone"),
        pytest.param(variant(preferred_window={"earliest": "2026-11-25T01:00:00Z",
                                               "latest": "2026-11-24T01:00:00Z"}),
                     "preferred_window.latest", id="inverted-window"),
        pytest.param(variant(topic="licensing", requester__timezone="Mars/Olympus"),
                     "requester.timezone", id="zone-beside-another-error"),
        pytest.param(variant(extra=1, preferred_window={"earliest": "2026-11-25T01:00:00z",
                                                        "latest": "2026-11-25T08:00:00+08:00"}),
                     "preferred_window.latest", id="inverted-window-beside-another-error"),
    ],
)
def test_errors_name_the_field(message: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_help_request(message)
    assert field in [e.field for e in caught.value.errors]



def test_every_bad_field_is_named_at_once() -> None:
    """The checks after the model report alongside the model's own errors; a value the model
    refused for its form is not judged again."""
    with pytest.raises(InvalidMessage) as caught:
        parse_help_request(variant(topic="licensing", requester__timezone="Mars/Olympus",
                                   preferred_window={"earliest": "tomorrow",
                                                     "latest": "2026-11-24T01:00:00Z"}))
    assert sorted(e.field for e in caught.value.errors) == [
        "preferred_window.earliest", "requester.timezone", "topic"]

def test_undecodable_bytes_are_an_invalid_message() -> None:
    with pytest.raises(InvalidMessage, match="not valid UTF-8 JSON"):
        parse_help_request(b"\xff\xfe{")


def test_wire_form_round_trips() -> None:
    request = parse_help_request(variant(source="partner", partner=PARTNER))
    assert parse_help_request(json.dumps(request.to_json_dict())) == request


def test_an_address_is_checked_once_and_a_bad_one_every_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stage reads the request again: the email check of an address is remembered."""
    import pydantic.networks

    checks: list[str] = []
    real = pydantic.networks.validate_email

    def counting(value: str) -> tuple[str, str]:
        checks.append(value)
        return real(value)

    monkeypatch.setattr(pydantic.networks, "validate_email", counting)
    address = "remembered.once@contoso.example.com"
    message = copy.deepcopy(VALID)
    message["requester"]["email"] = address
    assert [parse_help_request(message).requester.email for _ in range(3)] == [address] * 3
    assert checks == [address]

    message["requester"]["email"] = "not-an-address"
    for _ in range(2):
        with pytest.raises(InvalidMessage, match=r"requester\.email"):
            parse_help_request(message)
    assert checks == [address, "not-an-address", "not-an-address"]
