"""Reading HelpRequests from a JSON file, a JSON Lines file, or standard input."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.errors import FieldError, InvalidMessage
from schemas.help_request import HelpRequest, parse_help_request


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line (or whole file) that is not a valid HelpRequest."""

    where: str
    error: InvalidMessage

    def __str__(self) -> str:
        return "\n".join(f"{self.where}: {e}" for e in self.error.errors)


def read_requests(path: str) -> Iterator[HelpRequest | BadLine]:
    """JSON Lines, or one (pretty-printed) JSON object; ``-`` reads standard input.

    When the first non-blank line is a whole JSON value the file is JSON Lines and is streamed,
    so 100,000 requests are never held in memory at once; otherwise the file is one document.
    A line that is not UTF-8 is a bad line of its own; the others are read.
    """
    name = "<stdin>" if path == "-" else path
    with sys.stdin.buffer if path == "-" else Path(path).open("rb") as handle:
        lines = enumerate(handle, start=1)
        found = next(((n, raw) for n, raw in lines if raw.strip()), None)
        if found is None:
            return
        number, raw = found
        line = _decoded(raw, f"{name}:{number}")
        if isinstance(line, BadLine):
            yield line
        else:
            try:
                first: Any = json.loads(line)
            except json.JSONDecodeError:
                rest = _decoded(raw + handle.read(), name)
                yield rest if isinstance(rest, BadLine) else _parse_document(rest, name)
                return
            yield _parse(first, f"{name}:{number}")
        for later, raw in lines:
            if raw.strip():
                text = _decoded(raw, f"{name}:{later}")
                yield text if isinstance(text, BadLine) else _parse(text, f"{name}:{later}")


def _decoded(raw: bytes, where: str) -> str | BadLine:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadLine(where, InvalidMessage([FieldError(
            "", f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start}")]))


def _parse_document(text: str, where: str) -> HelpRequest | BadLine:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadLine(where, InvalidMessage([FieldError("", f"not valid JSON: {exc}")]))
    return _parse(data, where)


def _parse(raw: Any, where: str) -> HelpRequest | BadLine:
    try:
        return parse_help_request(raw)
    except InvalidMessage as exc:
        return BadLine(where, exc)
