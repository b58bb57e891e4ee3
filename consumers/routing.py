"""The routing policy (DESIGN §6): which FastTrack Center serves a request, and why.

A pure function of (request, directory, now); deterministic; it never reads the clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler.business_hours import earliest_start
from scheduler.directory import CenterDirectory
from scheduler.languages import resolve_language
from scheduler.regions import region_of_country
from schemas.events import Candidate, Reason, Rejection, RoutingDecision
from schemas.help_request import HelpRequest, Region


def route(request: HelpRequest, directory: CenterDirectory, now: datetime) -> RoutingDecision:
    """Pick the center for ``request`` as decided at ``now`` (never earlier than submission)."""
    policy = directory.policy
    decided_at = max(now, request.submitted_at)
    reasons: list[Reason] = []

    language = resolve_language(request.requester.language).tag
    if language is None:
        if policy.fallback_language is None:
            return _unroutable(request, decided_at, None, [Reason.UNSUPPORTED_LANGUAGE])
        language = policy.fallback_language
        reasons.append(Reason.LANGUAGE_FALLBACK)

    centers = directory.centers_speaking(language)
    if not centers:
        return _unroutable(request, decided_at, language, [*reasons, Reason.NO_CENTER_FOR_LANGUAGE])

    window = request.preferred_window
    not_before = decided_at + timedelta(minutes=policy.min_notice_minutes)
    if window and window.earliest and window.earliest > not_before:
        not_before = window.earliest
    not_after = window.latest if window else None

    starts: dict[str, datetime] = {}
    rejected: list[Rejection] = []
    for center in centers:
        start = earliest_start(center, policy, not_before)
        if start is None:
            rejected.append(Rejection(center_id=center.id, reason=Reason.CLOSED_WITHIN_HORIZON))
        else:
            starts[center.id] = start

    if not_after is not None and starts:
        in_window = {cid: s for cid, s in starts.items() if s <= not_after}
        if in_window:
            rejected += [Rejection(center_id=cid, reason=Reason.OUTSIDE_WINDOW)
                         for cid in starts if cid not in in_window]
            starts = in_window
        else:
            reasons.append(Reason.WINDOW_UNAVAILABLE)
            not_after = None
    rejected.sort(key=lambda r: r.center_id)

    if not starts:
        return _unroutable(request, decided_at, language,
                           [*reasons, Reason.CLOSED_WITHIN_HORIZON], rejected)

    ordered = sorted(starts.items(), key=lambda item: (item[1], item[0]))
    chosen, why = _choose(ordered, directory, _region(request), policy.max_wait_hours)
    return RoutingDecision(
        request_id=request.request_id,
        center_id=chosen,
        language=language,
        earliest_start=starts[chosen],
        reasons=[*reasons, why],
        rejected=rejected,
        candidates=[Candidate(center_id=cid, earliest_start=s) for cid, s in ordered],
        not_before=not_before,
        not_after=not_after,
        decided_at=decided_at,
    )


def _choose(ordered: list[tuple[str, datetime]], directory: CenterDirectory, region: Region,
            max_wait_hours: int) -> tuple[str, Reason]:
    """In-region earliest, unless another region starts more than ``max_wait_hours`` sooner."""
    first_id, first_start = ordered[0]
    in_region = [(cid, s) for cid, s in ordered if directory.by_id[cid].region == region]
    if not in_region:
        return first_id, Reason.OUT_OF_REGION
    home_id, home_start = in_region[0]
    if first_start < home_start - timedelta(hours=max_wait_hours):
        return first_id, Reason.FOLLOW_THE_SUN
    return home_id, Reason.IN_REGION


def _region(request: HelpRequest) -> Region:
    return request.tenant.region or region_of_country(request.tenant.country)


def _unroutable(request: HelpRequest, decided_at: datetime, language: str | None,
                reasons: list[Reason], rejected: list[Rejection] | None = None) -> RoutingDecision:
    return RoutingDecision(
        request_id=request.request_id, center_id=None, language=language, earliest_start=None,
        reasons=reasons, rejected=rejected or [], decided_at=decided_at,
    )
