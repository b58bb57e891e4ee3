"""Requesters' language tags resolve to the twelve FastTrack languages; countries to regions."""

from __future__ import annotations

import pytest
import pytz

from scheduler.languages import resolve_language
from scheduler.regions import region_of_country


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("zh-TW", "zh-Hant"), ("zh-HK", "zh-Hant"), ("zh-MO", "zh-Hant"), ("zh-Hant", "zh-Hant"),
        ("zh", "zh-Hans"), ("zh-CN", "zh-Hans"), ("zh-SG", "zh-Hans"), ("zh-Hans-CN", "zh-Hans"),
        ("pt", "pt-BR"), ("pt-PT", "pt-BR"), ("pt-BR", "pt-BR"),
        ("en", "en"), ("en-GB", "en"), ("en-IN", "en"), ("EN-us", "en"),
        ("es", "es"), ("es-MX", "es"), ("es-419", "es"),
        ("fr-CA", "fr"), ("de-CH", "de"), ("de-AT", "de"), ("it-CH", "it"),
        ("ja-JP", "ja"), ("ko-KR", "ko"), ("th-TH", "th"), ("vi-VN", "vi"),
        ("nl", None), ("ru", None), ("x-klingon", None), ("und", None),
    ],
    ids=lambda value: str(value),
)
def test_resolves_to_the_closest_supported_tag(tag: str, expected: str | None) -> None:
    assert resolve_language(tag).tag == expected


@pytest.mark.parametrize(
    ("country", "region"),
    [
        ("US", "AMER"), ("CA", "AMER"), ("MX", "AMER"), ("BR", "AMER"), ("AR", "AMER"),
        ("DE", "EMEA"), ("GB", "EMEA"), ("ZA", "EMEA"), ("EG", "EMEA"), ("AE", "EMEA"),
        ("SA", "EMEA"), ("IL", "EMEA"), ("TR", "EMEA"), ("KZ", "EMEA"), ("IS", "EMEA"),
        ("TW", "APAC"), ("CN", "APAC"), ("JP", "APAC"), ("IN", "APAC"), ("AU", "APAC"),
        ("NZ", "APAC"), ("SG", "APAC"), ("VN", "APAC"), ("TH", "APAC"),
    ],
)
def test_country_regions(country: str, region: str) -> None:
    assert region_of_country(country) == region


def test_every_iso_country_has_a_region() -> None:
    assert {region_of_country(c) for c in pytz.country_names} == {"AMER", "EMEA", "APAC"}
