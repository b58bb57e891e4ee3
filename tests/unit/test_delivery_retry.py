"""Retrying a delivery: transient failures with growing, jittered pauses; nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from scheduler.delivery import DeliveryFailed, DeliveryReceipt, Invite
from scheduler.delivery_retry import send_with_retry

INVITE = cast(Invite, object())  # the fake backend never looks inside
RECEIPT = DeliveryReceipt(location="fake://inbox")


@dataclass
class FakeBackend:
    """Fails with ``failures`` in order, then delivers."""

    failures: list[Exception] = field(default_factory=list)
    name: str = "fake"
    tells_removed_attendees: bool = False
    calls: int = 0

    def send(self, invite: Invite) -> DeliveryReceipt:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return RECEIPT


def transient(n: int = 1) -> list[Exception]:
    return [DeliveryFailed("fake", f"busy {i}", transient=True) for i in range(n)]


class Pauses(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def no_jitter(low: float, high: float) -> float:
    return high


def test_delivers_at_once_without_sleeping() -> None:
    pauses = Pauses()
    assert send_with_retry(FakeBackend(), INVITE, sleep=pauses) == RECEIPT
    assert pauses == []


def test_retries_transient_failures_with_doubling_pauses() -> None:
    backend, pauses = FakeBackend(transient(3)), Pauses()
    assert send_with_retry(backend, INVITE, sleep=pauses, jitter=no_jitter) == RECEIPT
    assert backend.calls == 4
    assert pauses == [0.5, 1.0, 2.0]


def test_gives_up_after_the_last_attempt_with_the_last_failure() -> None:
    backend, pauses = FakeBackend(transient(5)), Pauses()
    with pytest.raises(DeliveryFailed, match="busy 3"):
        send_with_retry(backend, INVITE, attempts=4, sleep=pauses, jitter=no_jitter)
    assert backend.calls == 4
    assert len(pauses) == 3  # no pause after the last attempt


@pytest.mark.parametrize("failure", [
    pytest.param(DeliveryFailed("fake", "550 no such user", transient=False), id="permanent"),
    pytest.param(ValueError("a bug"), id="not-a-delivery-failure"),
])
def test_does_not_retry_what_retrying_cannot_fix(failure: Exception) -> None:
    backend, pauses = FakeBackend([failure]), Pauses()
    with pytest.raises(type(failure)):
        send_with_retry(backend, INVITE, sleep=pauses)
    assert backend.calls == 1 and pauses == []


def test_pauses_are_jittered_between_zero_and_the_capped_backoff() -> None:
    ranges: list[tuple[float, float]] = []

    def jitter(low: float, high: float) -> float:
        ranges.append((low, high))
        return low

    send_with_retry(FakeBackend(transient(5)), INVITE, attempts=6, base_delay=1, max_delay=5,
                    sleep=Pauses(), jitter=jitter)
    assert ranges == [(0, 1), (0, 2), (0, 4), (0, 5), (0, 5)]


def test_default_jitter_stays_within_the_backoff() -> None:
    pauses = Pauses()
    send_with_retry(FakeBackend(transient(3)), INVITE, base_delay=0.5, sleep=pauses)
    assert all(0 <= pause <= limit for pause, limit in zip(pauses, [0.5, 1, 2], strict=True))


def test_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="attempts"):
        send_with_retry(cast(Any, FakeBackend()), INVITE, attempts=0)
