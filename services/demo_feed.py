"""The demo feed of ``fasttrack up``: sample requests posted to the gateway, progress printed."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from services.up_banner import Console

DEMO_GIVE_UP_AFTER = 300.0
FINAL_STATUSES = frozenset({"invited", "escalated", "cancelled", "rejected", "deadlettered"})


class DemoFeed:
    """Posts sample requests to the gateway at a gentle rate and prints each status change.

    Runs in a thread; every request is polled until it reaches a final status (or for
    `DEMO_GIVE_UP_AFTER` seconds). What went wrong is kept in `problems`.
    """

    def __init__(self, client: httpx.Client, console: Console, *, per_minute: float,
                 center_zones: Mapping[str, str], seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        run = uuid.uuid4().hex[:6]
        self._client = client
        self._console = console
        self._interval = 60.0 / per_minute
        self._center_zones = dict(center_zones)
        self._prefix = f"demo-{run}"
        self._seed = seed if seed is not None else int(run, 16)
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-feed", daemon=True)
        self._watching: dict[str, tuple[str, float]] = {}  # request_id -> (status, posted at)
        self.problems: list[str] = []

    def start(self) -> DemoFeed:
        self._console.line(f"demo feed: a sample request every {self._interval:.0f} s "
                           f"(ids {self._prefix}-NNNNNNN); `fasttrack up --no-demo` to skip")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        requests = self._requests()
        next_post = self._clock()
        while not self._stop.is_set():
            if self._clock() >= next_post:
                self._post(next(requests))
                next_post += self._interval
            self._poll()
            self._stop.wait(1.0)

    def _requests(self) -> Iterator[dict[str, Any]]:
        from services.sample_requests import sample_requests

        now = datetime.now(UTC)
        for request in sample_requests(10_000_000, now, per_hour=60 * 60 / self._interval,
                                       seed=self._seed, prefix=self._prefix):
            request["submitted_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            if request.pop("partner", None):  # the development key is a portal key, and a
                request["source"] = "fasttrack_site"  # portal key may not submit for partners
            yield request

    def _post(self, request: dict[str, Any]) -> None:
        request_id = request["request_id"]
        try:
            response = self._client.post("/v1/requests", json=request)
        except httpx.HTTPError as exc:
            self._problem(f"{request_id}: POST failed: {exc!r}")
            return
        if response.status_code != 202:
            self._problem(f"{request_id}: POST answered {response.status_code}: "
                          f"{response.text[:300]}")
            return
        tenant, requester = request["tenant"], request["requester"]
        self._watching[request_id] = ("", self._clock())
        self._show(request_id, response.json().get("status", "accepted"),
                   f"{requester['language']} · {tenant['name']} · {request['source']} · "
                   f"{request['topic']}")

    def _poll(self) -> None:
        for request_id, (shown, posted_at) in list(self._watching.items()):
            try:
                response = self._client.get(f"/v1/requests/{request_id}")
            except httpx.HTTPError:
                continue  # the gateway is restarting or gone; the supervisor notices
            if response.status_code != 200:
                continue
            status = response.json()
            if status.get("status") != shown:
                self._show(request_id, status["status"], self._describe(status))
            if status.get("status") in FINAL_STATUSES:
                del self._watching[request_id]
            elif self._clock() - posted_at > DEMO_GIVE_UP_AFTER:
                self._problem(f"{request_id}: still {status.get('status')} after "
                              f"{DEMO_GIVE_UP_AFTER:.0f} s; no longer watching it")
                del self._watching[request_id]

    def _show(self, request_id: str, status: str, detail: str) -> None:
        if request_id in self._watching:
            self._watching[request_id] = (status, self._watching[request_id][1])
        self._console.line(f"{request_id}  {status:<10} {detail}")

    def _describe(self, status: Mapping[str, Any]) -> str:
        center, meeting = status.get("center_id"), status.get("meeting")
        if meeting:
            return (f"→ {center}, {self._local_start(center, meeting['start'])}, "
                    f"specialist {meeting.get('specialist_id')}")
        if center:
            return f"→ {center}"
        timeline = status.get("timeline") or []
        detail = timeline[-1].get("detail") if timeline else None
        if isinstance(detail, Mapping):
            reason = detail.get("reason") or detail.get("reasons") or detail
            return f"({json.dumps(reason, ensure_ascii=False)[:160]})"
        return ""

    def _local_start(self, center: str | None, start: str) -> str:
        at = datetime.fromisoformat(start.replace("Z", "+00:00"))
        zone = self._center_zones.get(center or "")
        if not zone:
            return f"{at:%a %Y-%m-%d %H:%M} UTC"
        local = at.astimezone(ZoneInfo(zone))
        return f"{local:%a %Y-%m-%d %H:%M} {zone} ({at:%H:%M} UTC)"

    def _problem(self, text: str) -> None:
        self.problems.append(text)
        self._console.line(f"demo: {text}")
