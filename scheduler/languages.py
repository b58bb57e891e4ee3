"""Resolve a requester's BCP 47 tag to one of the twelve languages FastTrack speaks."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import langcodes

from scheduler.directory import SUPPORTED_LANGUAGES

# langcodes' distance scale: 0 same, ~5 regional variant (en-GB → en), 10-20 mutually intelligible
# or commonly second languages (ca → es). Past 25 a speaker would not follow the meeting.
MAX_DISTANCE = 25


@dataclass(frozen=True, slots=True)
class LanguageMatch:
    """The supported tag, or None when nothing is close enough; ``distance`` as langcodes has it."""

    tag: str | None
    distance: int


@lru_cache(maxsize=4096)
def resolve_language(tag: str) -> LanguageMatch:
    """Closest supported tag: zh-TW → zh-Hant, zh-SG → zh-Hans, pt-PT → pt-BR, en-GB → en."""
    try:
        match, distance = langcodes.closest_match(tag, list(SUPPORTED_LANGUAGES), MAX_DISTANCE)
    except (ValueError, LookupError):
        return LanguageMatch(None, 1000)
    if match == "und":
        return LanguageMatch(None, distance)
    return LanguageMatch(match, distance)
