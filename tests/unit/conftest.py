"""A compact directory for policy tests: seven centers whose hours are easy to reason about."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.directory import CenterDirectory, parse_directory

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")


def center(cid: str, region: str, zone: str, country: str, languages: list[str],
           hours: list[str], subdivision: str | None = None, specialists: int = 2,
           cap: int = 4, **extra: Any) -> dict[str, Any]:
    """A center open Mon-Fri with ``hours``, and ``specialists`` who speak all its languages."""
    return {
        "id": cid, "name": f"FastTrack Center {cid.title()}", "region": region, "timezone": zone,
        "country": country, "subdivision": subdivision, "languages": languages,
        "hours": {day: hours for day in WEEKDAYS}, "mailbox": f"fasttrack.{cid}@example.com",
        "specialists": [
            {"id": f"{cid}-{n:02d}", "name": f"Specialist {n}", "email": f"{cid}{n}@example.com",
            "languages": languages, "max_meetings_per_day": cap}
            for n in range(1, specialists + 1)
        ],
        **extra,
    }


def directory_data(only: tuple[str, ...] = (), **policy: Any) -> dict[str, Any]:
    data = {
        "policy": {"meeting_minutes": 60, "slot_step_minutes": 30, "min_notice_minutes": 240,
                   "horizon_days": 21, "max_wait_hours": 24, "fallback_language": "en", **policy},
        "centers": [
            center("taipei", "APAC", "Asia/Taipei", "TW", ["zh-Hant", "zh-Hans", "en"],
                   ["09:00-12:00", "13:00-18:00"]),
            center("tokyo", "APAC", "Asia/Tokyo", "JP", ["ja", "en"], ["09:00-17:30"]),
            center("sydney", "APAC", "Australia/Sydney", "AU", ["en"], ["09:00-17:00"], "NSW"),
            center("dublin", "EMEA", "Europe/Dublin", "IE", ["en", "fr"], ["09:00-17:00"]),
            center("munich", "EMEA", "Europe/Berlin", "DE", ["de", "en"], ["08:30-16:30"], "BY"),
            center("redmond", "AMER", "America/Los_Angeles", "US", ["en", "es"],
                   ["08:00-17:00"], "WA"),
            center("sao-paulo", "AMER", "America/Sao_Paulo", "BR", ["pt-BR", "es"],
                   ["09:00-18:00"]),
        ],
    }
    if only:
        data["centers"] = [c for c in data["centers"] if c["id"] in only]
    return data


def make_directory(only: tuple[str, ...] = (), **policy: Any) -> CenterDirectory:
    """The test directory, optionally just the centers in ``only``, with policy overrides."""
    return parse_directory(directory_data(only, **policy), "<test directory>")


@pytest.fixture(scope="session")
def directory() -> CenterDirectory:
    return make_directory()


def help_request(request_id: str = "r-1", submitted_at: str = "2026-11-23T09:30:00+08:00",
                 language: str = "en", country: str = "TW", **extra: Any) -> dict[str, Any]:
    return {
        "request_id": request_id, "submitted_at": submitted_at, "source": "admin_center",
        "tenant": {"id": f"t-{country}", "name": "Contoso", "country": country},
        "requester": {"name": "Alex", "email": "alex@contoso.example.com", "language": language},
        "topic": "core_onboarding", **extra,
    }
