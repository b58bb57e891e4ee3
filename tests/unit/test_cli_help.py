"""``--help`` works for ``fasttrack`` and for every command under it (DESIGN §11), and a bare
``fasttrack`` prints the help, not a traceback."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from services.cli import _parser, main


def command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                  ) -> Iterator[tuple[str, ...]]:
    """Every command and sub-command, as the words that call it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name)
                yield from command_paths(sub, (*path, name))


COMMANDS = list(command_paths(_parser()))


def test_there_are_commands_to_check() -> None:
    assert {("route",), ("simulate",), ("bench",), ("up",), ("worker",)} <= set(COMMANDS)


@pytest.mark.parametrize("words", [(), *COMMANDS], ids=lambda w: " ".join(w) or "fasttrack")
def test_help_exits_zero_and_describes(words: tuple[str, ...],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*words, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: fasttrack {' '.join(words)}".rstrip())
    assert "%%" not in out and "%(" not in out  # every escape of argparse's formatting undone


def test_no_command_prints_the_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "bench" in out and "latency at 50%," in out


@pytest.mark.parametrize("at", ["2026-02-30T09:00:00+08:00", "tomorrow"])
def test_a_bad_decision_time_is_named(at: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["route", "-", "--at", at])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --at: {at!r} is not" in err and "_timestamp" not in err
