"""The agents' runner: every record of a batch ends emitted, retried alone, or dead-lettered,
even when the stage's batch path itself raises (Faust acks the batch when the body ends)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from consumers import app as app_module
from consumers.app import _Runner
from consumers.envelope import Emit, Origin, Unprocessable
from consumers.stages import Outcome, Record


@dataclass
class Message:
    value: bytes
    offset: int
    topic: str = "fasttrack.requests.submitted"
    partition: int = 0
    key: bytes | None = None


@dataclass
class Event:
    message: Message
    headers: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Topic:
    sent: list[tuple[bytes | None, bytes]] = field(default_factory=list)

    async def send(self, *, key: bytes | None, value: bytes, headers: dict[str, bytes]) -> None:
        self.sent.append((key, value))


@dataclass
class Store:
    letters: list[dict[str, Any]] = field(default_factory=list)

    def record_deadletter(self, **letter: Any) -> int:
        self.letters.append(letter)
        return len(self.letters)

    advanced: list[tuple[Any, ...]] = field(default_factory=list)

    def advance(self, *args: Any) -> None:
        self.advanced.append(args)


@dataclass
class Stage:
    """Echoes each record to ``out``; ``bad`` records are unprocessable; the batch path
    raises when ``batch_breaks``."""

    batch_breaks: bool
    handled: list[bytes] = field(default_factory=list)

    def handle(self, value: bytes, origin: Origin) -> list[Emit]:
        if value == b"bad":
            raise Unprocessable("bad record")
        self.handled.append(value)
        return [Emit("out", None, value)]

    def handle_batch(self, records: Sequence[Record]) -> list[Outcome]:
        if self.batch_breaks:
            raise RuntimeError("the batch path has a bug")
        outcomes: list[Outcome] = []
        for value, origin in records:
            try:
                outcomes.append(self.handle(value, origin))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes


def run(stage: Stage, values: list[bytes]) -> tuple[Topic, Topic, Store]:
    out, dead, store = Topic(), Topic(), Store()
    runner = _Runner({"out": out, "requests_deadletter": dead}, store,  # type: ignore[arg-type]
                     lambda: datetime(2026, 11, 23, tzinfo=UTC))
    events = [Event(Message(v, n)) for n, v in enumerate(values)]
    asyncio.run(runner.process(stage, events))  # type: ignore[arg-type]
    return out, dead, store


def test_each_record_of_a_batch_is_emitted_or_dead_lettered_in_order() -> None:
    out, dead, store = run(Stage(batch_breaks=False), [b"a", b"bad", b"c"])
    assert [v for _, v in out.sent] == [b"a", b"c"]
    assert [v for _, v in dead.sent] == [b"bad"]
    assert store.letters[0]["origin_offset"] == 1


def test_a_batch_path_that_raises_loses_nothing(monkeypatch: Any) -> None:
    monkeypatch.setattr(app_module, "RETRY_BACKOFF_SECONDS", 0.0)
    stage = Stage(batch_breaks=True)
    out, dead, _ = run(stage, [b"a", b"bad", b"c"])
    assert [v for _, v in out.sent] == [b"a", b"c"]  # each retried alone, in order
    assert [v for _, v in dead.sent] == [b"bad"]
    assert stage.handled == [b"a", b"c"]


@dataclass
class BrokenStore(Store):
    """A database that cannot take the dead letter (down, or refusing its text)."""

    def record_deadletter(self, **letter: Any) -> int:
        raise OSError("database unavailable")


def test_a_dead_letter_the_database_cannot_take_still_reaches_the_topic() -> None:
    out, dead, store = Topic(), Topic(), BrokenStore()
    runner = _Runner({"out": out, "requests_deadletter": dead}, store,  # type: ignore[arg-type]
                     lambda: datetime(2026, 11, 23, tzinfo=UTC))
    events = [Event(Message(v, n)) for n, v in enumerate([b"a", b"bad", b"c"])]

    asyncio.run(runner.process(Stage(batch_breaks=False), events))  # type: ignore[arg-type]

    assert [v for _, v in dead.sent] == [b"bad"]
    assert [v for _, v in out.sent] == [b"a", b"c"]  # the records after it are not dropped


@dataclass
class Down(Stage):
    """Every record fails as a database that is down does: a transient error, each attempt."""

    def handle(self, value: bytes, origin: Origin) -> list[Emit]:
        raise OSError("connection refused")


def test_a_runner_that_does_not_mark_requests_leaves_their_status(monkeypatch: Any) -> None:
    monkeypatch.setattr(app_module, "RETRY_BACKOFF_SECONDS", 0.0)
    out, dead = Topic(), Topic()
    for marks, advanced in ((True, 1), (False, 0)):
        store = Store()
        runner = _Runner({"out": out, "requests_deadletter": dead}, store,  # type: ignore[arg-type]
                         lambda: datetime(2026, 11, 23, tzinfo=UTC), marks_requests=marks)
        event = Event(Message(b'{"request_id": "r-1"}', 0, key=b"r-1"))
        asyncio.run(runner.process(Down(batch_breaks=False), [event]))  # type: ignore[arg-type]
        assert len(store.letters) == 1 and store.letters[0]["attempts"] == app_module.MAX_ATTEMPTS
        assert len(store.advanced) == advanced
