"""``DELETE /v1/requests/{id}`` and ``POST /v1/requests/{id}/reschedule`` for portals and partners.

Who may change a request is who may read it (``ApiKey.read_denial``). The handlers translate
HTTP into :func:`scheduler.lifecycle.cancel` / :func:`~scheduler.lifecycle.reschedule` and the
outcome back: 200 with the request's status when it was done (or had been), 409 when the meeting
changed meanwhile, cannot be changed, or has no slot in the new window.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, model_validator
from starlette.concurrency import run_in_threadpool

from scheduler.lifecycle import ChangeOutcome, ChangeResult, Lifecycle, cancel, reschedule
from scheduler.request_store import RequestStore
from schemas.help_request import PreferredWindow
from services.api_keys import ApiKey
from services.gateway_auth import Caller

_DONE = {ChangeResult.CANCELLED, ChangeResult.ALREADY_CANCELLED, ChangeResult.RESCHEDULED,
         ChangeResult.ALREADY_DONE}
_PUBLIC_STATUS = {"deadlettered": "rejected"}


class RescheduleBody(BaseModel):
    """The new preferred window; the meeting moves to the first slot the policy gives in it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preferred_window: PreferredWindow

    @model_validator(mode="after")
    def _not_inverted(self) -> RescheduleBody:
        window = self.preferred_window
        if window.earliest and window.latest and window.latest <= window.earliest:
            raise ValueError("preferred_window.latest must be after preferred_window.earliest")
        return self


class ChangeBody(BaseModel):
    """What the change did, and the request's status afterwards (as ``GET`` shows it)."""

    result: str
    detail: str
    reasons: list[str]
    request: dict[str, Any]


def create_lifecycle_router(*, lifecycle: Lifecycle, store: RequestStore,
                            clock: Callable[[], datetime]) -> APIRouter:
    """The two lifecycle routes; mount with ``app.include_router(...)`` on an app whose
    ``state.api_keys`` holds the key ring (see :mod:`services.gateway_auth`)."""

    async def authorize(id: str, key: ApiKey) -> None:
        owner = await run_in_threadpool(store.owner, id)
        if owner is None:
            raise HTTPException(404, f"no request {id!r} was accepted")
        denial = key.read_denial(owner.source, owner.partner_id, owner.tenant_id)
        if denial is not None:
            raise HTTPException(403, denial)

    async def answer(outcome: ChangeOutcome) -> ChangeBody:
        if outcome.result not in _DONE:
            raise HTTPException(409, f"{outcome.result.value}: {outcome.detail}"
                                + (f" ({', '.join(outcome.reasons)})" if outcome.reasons else ""))
        status = await run_in_threadpool(store.status, outcome.request_id)
        assert status is not None
        body = status.to_json_dict()
        for item in (body, *body["timeline"]):
            item["status"] = _PUBLIC_STATUS.get(item["status"], item["status"])
        return ChangeBody(result=outcome.result.value, detail=outcome.detail,
                          reasons=outcome.reasons, request=body)

    async def cancel_request(id: str, key: Caller) -> ChangeBody:
        """Cancel the request and its meeting (METHOD:CANCEL to everyone invited)."""
        await authorize(id, key)
        return await answer(await run_in_threadpool(
            cancel, id, lifecycle, clock(), reason=f"api:{key.name}"))

    async def reschedule_request(id: str, body: RescheduleBody, key: Caller) -> ChangeBody:
        """Move the booked meeting into a new preferred window (updated METHOD:REQUEST)."""
        await authorize(id, key)
        return await answer(await run_in_threadpool(
            reschedule, id, body.preferred_window, lifecycle, clock()))

    errors: dict[int | str, dict[str, Any]] = {
        401: {"description": "No or unknown API key"},
        403: {"description": "The key may not change this request"},
        404: {"description": "Unknown request"},
        409: {"description": "Changed meanwhile, not changeable, or no slot in the window"},
    }
    router = APIRouter(tags=["requests"])
    router.add_api_route("/v1/requests/{id}", cancel_request, methods=["DELETE"],
                         response_model=ChangeBody, summary="Cancel a request",
                         responses=errors)
    router.add_api_route("/v1/requests/{id}/reschedule", reschedule_request, methods=["POST"],
                         response_model=ChangeBody, summary="Reschedule a request's meeting",
                         responses=errors)
    return router
