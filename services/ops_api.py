"""The ops API (``/v1/ops/...``, JSON, in the OpenAPI document) and the dashboard page that uses it.

Only ``ops`` keys get in: ``Authorization: Bearer <key>`` for scripts. A browser signs in once,
by the login form at ``/dashboard`` or by opening ``/dashboard?key=<key>``; either sets the key in
an HttpOnly, SameSite=Strict cookie (Secure on HTTPS) and redirects to ``/dashboard``, so the key
leaves the address bar and scripts on the page cannot read it. SameSite=Strict keeps other sites
from posting redrives with it. ``POST /dashboard/logout`` clears it.
"""

# No `from __future__ import annotations`: FastAPI must resolve the route signatures, which
# refer to names local to create_ops_router.

import html
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from scheduler.directory import CenterDirectory
from scheduler.request_store import RequestStore
from services.api_keys import ApiKey, ApiKeyRing, KeyKind
from services.gateway_auth import known_key
from services.ops_deadletters import (
    MAX_REASON_CHARS,
    DeadLetterDesk,
    DeadLetterNotFound,
    DeadLetterNotOpen,
    RedriveFailed,
)
from services.ops_kafka import KafkaObserver, KafkaUnavailable
from services.ops_queries import (
    center_load,
    deadletters_summary,
    escalations_by_reason,
    recent_requests,
    requests_summary,
    routing_explanation,
)

COOKIE = "fasttrack_ops"
COOKIE_MAX_AGE = 12 * 3600
_ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass(frozen=True)
class OpsContext:
    """What the ops API reads and changes; built once by the composition root."""

    keys: ApiKeyRing
    engine: Engine
    directory: CenterDirectory
    observer: KafkaObserver
    desk: DeadLetterDesk
    clock: Callable[[], datetime]


class DiscardBody(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON_CHARS)]


class RedriveClassBody(BaseModel):
    error_class: Annotated[str, Field(min_length=1, max_length=255)]


class Problem(BaseModel):
    detail: str


_bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                     description="An ops key: `Authorization: Bearer <key>`")
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No or unknown key"},
    403: {"model": Problem, "description": "Not an ops key"},
}


def create_ops_router(ops: OpsContext) -> APIRouter:
    """``/v1/ops/*`` JSON endpoints and ``/dashboard``; every one needs an ops key."""

    def caller(request: Request, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> ApiKey:
        presented = credentials.credentials if credentials else request.cookies.get(COOKIE)
        return _ops_key(ops.keys, presented)

    Caller = Annotated[ApiKey, Depends(caller)]
    router = APIRouter(tags=["ops"], responses=_ERRORS)
    store = RequestStore(ops.engine)

    @router.get("/v1/ops/topics", summary="Topics: end offsets, in/out rates over time")
    def topics(_: Caller) -> dict[str, Any]:
        return _kafka(ops.observer.topics_view)

    @router.get("/v1/ops/lag", summary="Consumer groups: committed offsets, lag and its trend")
    def lag(_: Caller) -> dict[str, Any]:
        return _kafka(ops.observer.lag_view)

    @router.get("/v1/ops/requests/summary",
                summary="Requests by status, region, language; p50/p95/p99 stage latencies")
    def summary(_: Caller) -> dict[str, Any]:
        return requests_summary(ops.engine)

    @router.get("/v1/ops/requests/recent", summary="The requests that moved last, with timelines")
    def recent(_: Caller, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> dict[str, Any]:
        return {"requests": recent_requests(ops.engine, limit)}

    @router.get("/v1/ops/requests/{request_id}",
                summary="One request's timeline, routing reasons and rejected centers",
                responses={404: {"model": Problem}})
    def request_detail(request_id: str, _: Caller) -> dict[str, Any]:
        status = store.status(request_id)
        if status is None:
            raise HTTPException(404, f"no request {request_id!r} was accepted")
        data = status.to_json_dict()
        return data | {"explanation": routing_explanation(data["timeline"])}

    @router.get("/v1/ops/centers",
                summary="Per center: open now, next opening, utilisation, booked-hours heat map")
    def centers(_: Caller) -> dict[str, Any]:
        return {"centers": center_load(ops.engine, ops.directory, ops.clock())}

    @router.get("/v1/ops/escalations", summary="Escalations by stage and reason")
    def escalations(_: Caller) -> dict[str, Any]:
        counts = escalations_by_reason(ops.engine)
        return {"escalations": [{"stage": s, "reason": r, "count": n}
                                for (s, r), n in sorted(counts.items())]}

    @router.get("/v1/ops/deadletters/summary",
                summary="Open dead letters by error class; age of the oldest")
    def deadletter_summary(_: Caller) -> dict[str, Any]:
        return deadletters_summary(ops.engine, ops.clock())

    @router.get("/v1/ops/deadletters", summary="Browse dead letters: headers and payload")
    def deadletter_list(
            _: Caller, state: Annotated[str | None, Query(pattern="^(open|redriven|discarded)$")]
            = "open", error_class: str | None = None,
            limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        letters = ops.desk.browse(state, error_class, limit)
        return {"deadletters": [d.to_json_dict() for d in letters]}

    @router.post("/v1/ops/deadletters/{deadletter_id}/redrive",
                 summary="Produce one dead letter back to its origin topic",
                 responses={404: {"model": Problem}, 409: {"model": Problem},
                            503: {"model": Problem}})
    def redrive(deadletter_id: int, key: Caller) -> dict[str, Any]:
        return _desk(lambda: ops.desk.redrive(deadletter_id, key.name))

    @router.post("/v1/ops/deadletters/redrive",
                 summary="Redrive every open dead letter of one error class",
                 responses={503: {"model": Problem}})
    def redrive_class(body: RedriveClassBody, key: Caller) -> dict[str, Any]:
        return {"redriven": _desk(lambda: ops.desk.redrive_class(body.error_class, key.name))}

    @router.post("/v1/ops/deadletters/{deadletter_id}/discard",
                 summary="Discard a dead letter, with a reason",
                 responses={404: {"model": Problem}, 409: {"model": Problem}})
    def discard(deadletter_id: int, body: DiscardBody, key: Caller) -> dict[str, Any]:
        return _desk(lambda: ops.desk.discard(deadletter_id, key.name, body.reason))

    @router.get("/v1/ops/audit", summary="Audit trail of redrives and discards: who, when, what")
    def audit(_: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        return {"audit": ops.desk.audit(limit)}

    _dashboard_routes(router, ops)
    return router


def _dashboard_routes(router: APIRouter, ops: OpsContext) -> None:
    @router.get("/dashboard", include_in_schema=False)
    def dashboard(request: Request, key: str | None = None) -> Response:
        if key is not None:
            return _sign_in(request, ops.keys, key)
        try:
            _ops_key(ops.keys, request.cookies.get(COOKIE))
        except HTTPException as exc:
            return _login_page(None if exc.status_code == 401 and COOKIE not in request.cookies
                               else str(exc.detail), exc.status_code)
        return _html(_asset_text("index.html"))

    @router.post("/dashboard/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        return _sign_in(request, ops.keys, (form.get("key") or [""])[0])

    @router.post("/dashboard/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse("/dashboard", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @router.get("/dashboard/assets/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in _ASSETS:
            raise HTTPException(404, "no such asset")
        return Response(_asset_text(name), media_type=_ASSETS[name],
                        headers={"Cache-Control": "no-cache"})


def _ops_key(keys: ApiKeyRing, presented: str | None) -> ApiKey:
    found = known_key(keys, presented, hint=" with an ops key")
    if found.kind is not KeyKind.OPS:
        raise HTTPException(403, f"key {found.name!r} is a {found.kind} key; the ops API and "
                                 "dashboard need an ops key")
    return found


def _sign_in(request: Request, keys: ApiKeyRing, presented: str) -> Response:
    try:
        found = _ops_key(keys, presented.strip())
    except HTTPException as exc:
        return _login_page(str(exc.detail), exc.status_code)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(COOKIE, found.key, max_age=COOKIE_MAX_AGE, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


def _login_page(problem: str | None, status: int) -> HTMLResponse:
    message = "" if problem is None else f'<p class="problem">{html.escape(problem)}</p>'
    page = _asset_text("login.html").replace("<!--problem-->", message)
    return _html(page, status)


def _html(page: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(page, status_code=status, headers={
        "Content-Security-Policy": _CSP, "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


def _asset_text(name: str) -> str:
    return files("services").joinpath("dashboard", name).read_text(encoding="utf-8")


def _kafka(view: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return view()
    except KafkaUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc


def _desk(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except DeadLetterNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except DeadLetterNotOpen as exc:
        raise HTTPException(409, str(exc)) from exc
    except RedriveFailed as exc:
        raise HTTPException(503, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
