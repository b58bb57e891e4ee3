"""The routing policy (DESIGN §6), as a table of situations a FastTrack Center meets.

Expected starts were worked out by hand from the centers' hours and the `holidays` calendars:
min notice 4 h, 60-minute meetings on a 30-minute grid, horizon 21 days, max wait 24 h.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.routing import route
from scheduler.directory import CenterDirectory
from schemas.help_request import parse_help_request
from tests.unit.conftest import help_request, make_directory

FULL = make_directory()
SYDNEY_ONLY = make_directory(only=("sydney",))


def case(name: str, request: dict[str, Any], center: str | None, start: str | None,
         reasons: list[str], rejected: dict[str, str] | None = None,
         directory: CenterDirectory = FULL, language: str | None = "en") -> Any:
    return pytest.param(request, directory, center, start, reasons, rejected or {}, language,
                        id=name)


CASES = [
    case("taipei-monday-tie-broken-by-id", help_request(), "taipei", "2026-11-23T05:30:00Z",
         ["in_region"]),
    case("friday-evening-waits-for-monday",
         help_request(submitted_at="2026-11-27T17:00:00+08:00", language="zh-TW"),
         "taipei", "2026-11-30T01:00:00Z", ["in_region"], language="zh-Hant"),
    case("saturday-zh-CN-to-simplified",
         help_request(submitted_at="2026-11-28T11:00:00+08:00", language="zh-CN", country="CN"),
         "taipei", "2026-11-30T01:00:00Z", ["in_region"], language="zh-Hans"),
    case("lunar-new-year-2027-taipei-closed-feb-4-to-10",
         help_request(submitted_at="2027-02-04T10:00:00+08:00", language="zh-TW"),
         "taipei", "2027-02-11T01:00:00Z", ["in_region"], language="zh-Hant"),
    case("golden-week-2027-tokyo-reopens-may-6",
         help_request(submitted_at="2027-04-30T15:00:00+09:00", language="ja", country="JP"),
         "tokyo", "2027-05-06T00:00:00Z", ["in_region"], language="ja"),
    case("labor-thanksgiving-day-japan-out-of-region",
         help_request(language="ja", country="DE"),
         "tokyo", "2026-11-24T00:00:00Z", ["out_of_region"], language="ja"),
    case("christmas-and-st-stephens-dublin",
         help_request(submitted_at="2026-12-24T14:00:00+00:00", language="fr", country="IE"),
         "dublin", "2026-12-28T09:00:00Z", ["in_region"], language="fr"),
    case("thanksgiving-follow-the-sun",
         help_request(submitted_at="2026-11-25T17:00:00-08:00", country="US"),
         "sydney", "2026-11-26T05:00:00Z", ["follow_the_sun"]),
    case("los-angeles-spring-forward-monday-is-pdt",
         help_request(submitted_at="2027-03-12T17:00:00-08:00", country="US"),
         "redmond", "2027-03-15T15:00:00Z", ["in_region"]),
    case("berlin-easter-and-spring-forward",
         help_request(submitted_at="2027-03-26T12:00:00+01:00", language="de", country="DE"),
         "munich", "2027-03-30T06:30:00Z", ["in_region"], language="de"),
    case("sydney-daylight-saving-ends-april",
         help_request(submitted_at="2027-04-02T15:00:00+11:00", country="AU"),
         "sydney", "2027-04-04T23:00:00Z", ["in_region"], directory=SYDNEY_ONLY),
    case("sydney-daylight-saving-starts-october-after-labour-day",
         help_request(submitted_at="2027-10-01T15:00:00+10:00", country="AU"),
         "sydney", "2027-10-04T22:00:00Z", ["in_region"], directory=SYDNEY_ONLY),
    case("sao-paulo-has-no-dst-since-2019",
         help_request(submitted_at="2027-11-05T16:00:00-03:00", language="pt-BR", country="BR"),
         "sao-paulo", "2027-11-08T12:00:00Z", ["in_region"], language="pt-BR"),
    case("dutch-falls-back-to-english", help_request(language="nl", country="NL"),
         "munich", "2026-11-23T07:30:00Z", ["language_fallback", "in_region"]),
    case("no-fallback-means-unroutable", help_request(language="nl", country="NL"),
         None, None, ["unsupported_language"], directory=make_directory(fallback_language=None),
         language=None),
    case("no-center-speaks-thai", help_request(language="th", country="TH"),
         None, None, ["no_center_for_language"], language="th"),
    case("window-earliest-moves-t0",
         help_request(preferred_window={"earliest": "2026-11-25T02:00:00Z"}),
         "sydney", "2026-11-25T02:00:00Z", ["in_region"]),
    case("window-latest-rules-out-other-centers",
         help_request(country="US", preferred_window={"latest": "2026-11-23T06:00:00Z"}),
         "taipei", "2026-11-23T05:30:00Z", ["out_of_region"],
         {c: "outside_window" for c in ("dublin", "munich", "redmond", "sydney", "tokyo")}),
    case("window-nobody-can-meet-is-dropped",
         help_request(preferred_window={"latest": "2026-11-23T02:00:00Z"}),
         "taipei", "2026-11-23T05:30:00Z", ["window_unavailable", "in_region"]),
    case("closed-within-a-one-day-horizon",
         help_request(submitted_at="2026-11-27T20:00:00+08:00", language="zh-TW"),
         None, None, ["closed_within_horizon"], {"taipei": "closed_within_horizon"},
         directory=make_directory(horizon_days=1), language="zh-Hant"),
]


@pytest.mark.parametrize(
    ("raw", "directory", "center", "start", "reasons", "rejected", "language"), CASES)
def test_routing_policy(raw: dict[str, Any], directory: CenterDirectory, center: str | None,
                        start: str | None, reasons: list[str], rejected: dict[str, str],
                        language: str | None) -> None:
    request = parse_help_request(raw)
    decision = route(request, directory, request.submitted_at).contract_dict()
    assert decision == {
        "request_id": request.request_id, "center_id": center, "language": language,
        "earliest_start": start, "reasons": reasons,
        "rejected": [{"center_id": c, "reason": r} for c, r in sorted(rejected.items())],
    }


def test_decision_time_is_never_before_submission() -> None:
    request = parse_help_request(help_request())
    early = route(request, FULL, datetime(2020, 1, 1, tzinfo=UTC))
    assert early == route(request, FULL, request.submitted_at)


def test_a_later_decision_time_moves_the_start() -> None:
    # Decided at 06:00Z, T0 is 10:00Z: 18:00 in Taipei (closing), Tokyo on Labor Thanksgiving Day,
    # so Sydney's Tuesday 09:00 AEDT (Monday 22:00Z) comes first.
    request = parse_help_request(help_request())
    later = route(request, FULL, datetime(2026, 11, 23, 6, 0, tzinfo=UTC))
    assert (later.center_id, later.earliest_start) == (
        "sydney", datetime(2026, 11, 23, 22, 0, tzinfo=UTC))


def test_candidates_are_ordered_for_overflow() -> None:
    request = parse_help_request(help_request(country="US"))
    decision = route(request, FULL, request.submitted_at)
    keys = [(c.earliest_start, c.center_id) for c in decision.candidates]
    assert keys == sorted(keys)
    assert {c.center_id for c in decision.candidates} == {
        "taipei", "tokyo", "sydney", "dublin", "munich", "redmond"}


@settings(max_examples=200, deadline=None)
@given(
    minutes=st.integers(min_value=0, max_value=60 * 24 * 400),
    language=st.sampled_from(["en", "zh-TW", "ja", "de", "fr", "pt-BR", "es-MX", "nl", "th"]),
    country=st.sampled_from(["US", "BR", "DE", "IE", "TW", "JP", "AU", "AE", "IN"]),
)
def test_routing_is_deterministic_and_starts_after_t0(minutes: int, language: str,
                                                       country: str) -> None:
    submitted = datetime(2026, 11, 1, tzinfo=UTC).timestamp() + minutes * 60
    stamp = datetime.fromtimestamp(submitted, UTC).isoformat()
    request = parse_help_request(help_request(submitted_at=stamp, language=language,
                                              country=country))
    first = route(request, FULL, request.submitted_at)
    assert first == route(request, FULL, request.submitted_at)
    if first.earliest_start is not None:
        assert first.not_before is not None
        assert first.earliest_start >= first.not_before
        assert first.center_id == first.candidates[0].center_id or first.reasons[-1] in (
            "in_region", "follow_the_sun")
