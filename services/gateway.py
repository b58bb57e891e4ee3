"""The HTTP gateway (DESIGN §11): portals and partners submit HelpRequests and read their status.

``create_gateway`` builds the app from its dependencies (no I/O, no globals); ``run_gateway`` is the
composition root behind ``fasttrack gateway``. A request is stored as accepted first and then
published; when publishing fails the caller gets 503 and a retry of the same POST publishes it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Annotated, Any

import structlog
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from scheduler.lifecycle import Lifecycle
from scheduler.request_store import Acceptance, RequestState, RequestStore, canonical_body_hash
from schemas.errors import InvalidMessage
from schemas.help_request import HelpRequest, parse_help_request
from services.api_keys import ApiKeyRing, InvalidApiKeys, load_api_keys
from services.bootstrap import build_runtime
from services.gateway_auth import Caller
from services.gateway_metrics import CountRequests, GatewayMetrics
from services.gateway_models import Accepted, Health, InvalidBody, Problem, RequestStatusBody
from services.kafka_config import kafka_python_producer_kwargs
from services.lifecycle_api import create_lifecycle_router
from services.ops_api import OpsContext, create_ops_router
from services.ops_deadletters import DeadLetterDesk, KafkaRecordSink
from services.ops_kafka import KafkaObserver
from services.ops_metrics import OpsCollector
from services.publisher import KafkaRequestPublisher, PublishFailed, RequestPublisher
from services.settings import Settings

MAX_BODY_BYTES = 64 * 1024
RETRY_AFTER_SECONDS = 5
GRACEFUL_SHUTDOWN_SECONDS = 10
EXIT_CONFIG = 2
# The store's internal states that the contract reports under another name.
_PUBLIC_STATUS = {RequestState.DEADLETTERED.value: RequestState.REJECTED.value}
_log = structlog.get_logger("fasttrack.gateway")


# --- handlers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Deps:
    settings: Settings
    store: RequestStore
    publisher: RequestPublisher
    clock: Callable[[], datetime]
    metrics: GatewayMetrics


def _deps(request: Request) -> _Deps:
    deps: _Deps = request.app.state.deps
    return deps


Deps = Annotated[_Deps, Depends(_deps)]


async def submit_request(request: Request, caller: Caller, deps: Deps) -> dict[str, str]:
    """``POST /v1/requests``: store the HelpRequest as accepted, publish it, answer 202."""
    body, help_request = _decode(await _read_body(request))
    _refuse_if(caller.submit_denial(help_request))
    request_id = help_request.request_id
    log = _log.bind(request_id=request_id, api_key=caller.name)
    outcome = await run_in_threadpool(
        deps.store.accept, help_request, canonical_body_hash(body), deps.clock(), body)
    if outcome.kind is Acceptance.CONFLICT:
        log.info("request_conflict")
        raise HTTPException(409, f"request_id {request_id!r} was already submitted with a "
                                 "different body; send a new request_id for a new request")
    if outcome.status is RequestState.ACCEPTED:  # new, or an earlier publish may have failed
        await _publish(deps, request_id, body, log)
    deps.metrics.submitted.labels(help_request.source.value, outcome.kind.value).inc()
    log.info("request_accepted", outcome=outcome.kind.value, source=help_request.source.value)
    return {"request_id": request_id, "status": "accepted",
            "status_url": f"/v1/requests/{request_id}"}


async def read_request(id: str, caller: Caller, deps: Deps) -> dict[str, Any]:
    """``GET /v1/requests/{id}``: the request's status, center, meeting and timeline."""
    owner = await run_in_threadpool(deps.store.owner, id)
    if owner is None:
        raise HTTPException(404, f"no request {id!r} was accepted")
    _refuse_if(caller.read_denial(owner.source, owner.partner_id, owner.tenant_id))
    status = await run_in_threadpool(deps.store.status, id)
    if status is None:
        raise HTTPException(404, f"no request {id!r} was accepted")
    return _public(status.to_json_dict())


async def health(response: Response, deps: Deps) -> Health:
    """``GET /healthz``: 200 when the database and the broker answer, 503 otherwise."""
    database = await run_in_threadpool(deps.store.reachable)
    broker = await deps.publisher.reachable()
    if not (database and broker):
        response.status_code = 503
    return Health(status="ok" if database and broker else "degraded",
                  database="ok" if database else "unavailable",
                  broker="ok" if broker else "unavailable")


async def metrics(deps: Deps) -> Response:
    """``GET /metrics``: Prometheus text exposition."""
    return Response(generate_latest(deps.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> HTTPException:
    return HTTPException(413, f"request body is larger than {MAX_BODY_BYTES} bytes")


def _decode(raw: bytes) -> tuple[dict[str, Any], HelpRequest]:
    try:
        help_request = parse_help_request(raw)
    except InvalidMessage as exc:
        raise HTTPException(422, [error.as_dict() for error in exc.errors]) from exc
    body: dict[str, Any] = json.loads(raw)
    return body, help_request


def _refuse_if(denial: str | None) -> None:
    if denial is not None:
        raise HTTPException(403, denial)


async def _publish(deps: _Deps, request_id: str, body: dict[str, Any], log: Any) -> None:
    try:
        await deps.publisher.publish(request_id, body)
    except PublishFailed as exc:
        deps.metrics.publish_failures.inc()
        log.warning("publish_failed", error=str(exc))
        raise HTTPException(
            503, "the request is accepted but could not be queued; retry the same POST",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from exc


def _public(status: dict[str, Any]) -> dict[str, Any]:
    """Report the store's internal statuses under the contract's names (deadlettered → rejected);
    the timeline entry's detail still says what happened."""
    for item in (status, *status["timeline"]):
        item["status"] = _PUBLIC_STATUS.get(item["status"], item["status"])
    return status


# --- the app ------------------------------------------------------------------------------------


def create_gateway(settings: Settings, *, store: RequestStore, publisher: RequestPublisher,
                   keys: ApiKeyRing, clock: Callable[[], datetime],
                   ops: OpsContext | None = None,
                   lifecycle: Lifecycle | None = None) -> FastAPI:
    """The gateway app; its lifespan starts and stops ``publisher``.

    With ``ops``, it also serves the ops API and dashboard and exports the pipeline's metrics.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await publisher.start()
        try:
            yield
        finally:
            await publisher.stop()

    app = FastAPI(title="FastTrack scheduling gateway", version="1", lifespan=lifespan,
                  description="Submit FastTrack help requests and read where they stand.")
    gateway_metrics = GatewayMetrics()
    app.state.deps = _Deps(settings, store, publisher, clock, gateway_metrics)
    app.state.api_keys = keys  # for services.gateway_auth.Caller
    app.add_middleware(CountRequests, metrics=gateway_metrics)
    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem, "description": "No or unknown API key"},
        403: {"model": Problem, "description": "The key may not do this; the detail says why"},
    }
    app.add_api_route(
        "/v1/requests", submit_request, methods=["POST"], status_code=202,
        response_model=Accepted, summary="Submit a HelpRequest", tags=["requests"],
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": _help_request_schema()}}}},
        responses=errors | {
            409: {"model": Problem, "description": "The request_id was used for another body"},
            413: {"model": Problem, "description": f"Body over {MAX_BODY_BYTES} bytes"},
            422: {"model": InvalidBody, "description": "Invalid HelpRequest; names each field"},
            503: {"model": Problem, "description": "Accepted but not queued; retry the POST"},
        })
    app.add_api_route(
        "/v1/requests/{id}", read_request, methods=["GET"], response_model=RequestStatusBody,
        summary="Read a request's status", tags=["requests"],
        responses=errors | {404: {"model": Problem, "description": "Unknown request"}})
    app.add_api_route("/healthz", health, methods=["GET"], response_model=Health,
                      summary="Database and broker health", tags=["operations"],
                      responses={503: {"model": Health, "description": "Degraded"}})
    app.add_api_route("/metrics", metrics, methods=["GET"], summary="Prometheus metrics",
                      tags=["operations"], response_class=Response)
    if lifecycle is not None:
        app.include_router(create_lifecycle_router(lifecycle=lifecycle, store=store, clock=clock))
    if ops is not None:
        app.include_router(create_ops_router(ops))
        gateway_metrics.registry.register(OpsCollector(ops.engine, ops.observer, ops.clock))
    return app


def _help_request_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        files("schemas").joinpath("help_request.v1.json").read_text(encoding="utf-8"))
    return schema


# --- `fasttrack gateway` ------------------------------------------------------------------------


def run_gateway(settings: Settings) -> int:
    """Serve the gateway on ``http_host:http_port`` until SIGINT/SIGTERM; return an exit code."""
    _configure_logging()
    if not settings.api_keys:
        print("fasttrack gateway: no API keys configured. Set FASTTRACK_API_KEYS to the path of "
              "a JSON or YAML file, or to an inline JSON list, of "
              '{"name", "key", "kind": "portal"|"partner"|"ops", "partner_id", "tenants"} '
              "entries (see README); `fasttrack up` creates a development key.", file=sys.stderr)
        return EXIT_CONFIG
    try:
        keys = load_api_keys(settings.api_keys)
        kafka = settings.kafka()
    except (InvalidApiKeys, ValueError) as exc:
        print(f"fasttrack gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    runtime = build_runtime(settings)
    engine = runtime.engine
    observer = KafkaObserver.for_pipeline(kafka, settings.topics)
    sink = KafkaRecordSink(kafka_python_producer_kwargs(kafka))
    ops = OpsContext(keys=keys, engine=engine, directory=runtime.directory,
                     observer=observer, desk=DeadLetterDesk(engine, sink, _utc_now),
                     clock=_utc_now)
    app = create_gateway(settings, store=runtime.store,
                         publisher=KafkaRequestPublisher(kafka, settings.topics),
                         keys=keys, clock=_utc_now, ops=ops, lifecycle=runtime.lifecycle())
    server = uvicorn.Server(uvicorn.Config(
        app, host=settings.http_host, port=settings.http_port, lifespan="on",
        access_log=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS))
    try:
        server.run()  # after a graceful shutdown on SIGTERM/SIGINT uvicorn re-raises the signal
    except SystemExit:  # uvicorn's exit when startup fails (broker down, port in use)
        print("fasttrack gateway: could not start; the log above says why", file=sys.stderr)
        return 1
    finally:
        observer.close()
        sink.close()
        engine.dispose()
    return 0


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _configure_logging() -> None:
    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(),
    ])
