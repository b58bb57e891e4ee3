"""The sample directory shipped in the package (DESIGN §5): loads, covers the world, is bookable."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from scheduler.business_hours import earliest_start
from scheduler.directory import (
    SUPPORTED_LANGUAGES,
    Center,
    Policy,
    default_directory,
    default_directory_path,
)
from schemas.help_request import Region

DIRECTORY = default_directory()
CENTERS = [pytest.param(c, id=c.id) for c in DIRECTORY.centers]


def test_ships_inside_the_package() -> None:
    assert default_directory_path().is_file()
    assert default_directory_path().name == "default_directory.yaml"


def test_policy_is_the_design_default() -> None:
    assert DIRECTORY.policy == Policy(meeting_minutes=60, slot_step_minutes=30,
                                      min_notice_minutes=240, horizon_days=21, max_wait_hours=24,
                                      fallback_language="en")


def test_covers_all_twelve_languages() -> None:
    offered = {language for c in DIRECTORY.centers for language in c.languages}
    assert offered == set(SUPPORTED_LANGUAGES)


def test_has_all_three_regions() -> None:
    assert set(Counter(c.region for c in DIRECTORY.centers)) == set(Region)


@pytest.mark.parametrize("center", CENTERS)
def test_specialists_speak_only_what_their_center_offers(center: Center) -> None:
    for specialist in center.specialists:
        assert set(specialist.languages) <= set(center.languages), specialist.id


@pytest.mark.parametrize("center", CENTERS)
def test_every_offered_language_has_a_speaker(center: Center) -> None:
    spoken = {language for s in center.specialists for language in s.languages}
    assert spoken == set(center.languages)


@pytest.mark.parametrize("center", CENTERS)
def test_center_is_realistically_staffed(center: Center) -> None:
    assert 2 <= len(center.specialists) <= 5
    assert all(3 <= s.max_meetings_per_day <= 5 for s in center.specialists)


@pytest.mark.parametrize("center", CENTERS)
def test_everyone_is_fictional_at_example_com(center: Center) -> None:
    addresses = [center.mailbox, *(s.email for s in center.specialists)]
    assert all(address.endswith("@example.com") for address in addresses)
    assert center.delivery.backend == "outbox"


def test_addresses_are_unique() -> None:
    addresses = [address for c in DIRECTORY.centers
                 for address in (c.mailbox, *(s.email for s in c.specialists))]
    assert len(addresses) == len(set(addresses))


@pytest.mark.parametrize("center", CENTERS)
def test_opens_on_weekdays_only_with_late_december_closures(center: Center) -> None:
    assert {day.value for day in center.hours} == {"mon", "tue", "wed", "thu", "fri"}
    assert any(day.month == 12 and day.day >= 24 for day in center.closures)


@pytest.mark.parametrize("center", CENTERS)
def test_every_center_can_be_booked_within_the_horizon(center: Center) -> None:
    assert earliest_start(center, DIRECTORY.policy, datetime(2027, 3, 1, tzinfo=UTC)) is not None
