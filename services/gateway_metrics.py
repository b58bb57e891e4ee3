"""The gateway's Prometheus metrics, and the ASGI middleware that counts its HTTP requests."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class GatewayMetrics:
    """The gateway's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "fasttrack_http_requests", "HTTP requests by method, route template and status code",
            ["method", "route", "status"], registry=self.registry)
        self.submitted = Counter(
            "fasttrack_requests_submitted", "HelpRequests accepted over HTTP, by source and "
            "whether they were new or a duplicate", ["source", "outcome"], registry=self.registry)
        self.publish_failures = Counter(
            "fasttrack_publish_failures", "Accepted requests that could not be published",
            registry=self.registry)


class CountRequests:
    """ASGI middleware: count each HTTP request under its route template, not its raw path."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.http_requests.labels(scope["method"], route, str(status)).inc()
