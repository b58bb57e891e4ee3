"""What the newcomer sees of ``fasttrack up``: timestamped console lines and the ready banner."""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from services.settings import Settings


class Console:
    """Timestamped lines on stdout, safe to use from the demo thread and the main thread."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def line(self, text: str = "", *, stamp: bool = True) -> None:
        prefix = f"{datetime.now().astimezone():%H:%M:%S}  " if stamp and text else ""
        with self._lock:
            self._stream.write(prefix + text + "\n")
            self._stream.flush()

    def block(self, text: str) -> None:
        for line in text.splitlines():
            self.line(line, stamp=False)


def example_request(now: datetime) -> dict[str, Any]:
    """A small valid HelpRequest for the curl example."""
    return {
        "request_id": f"my-first-request-{now:%H%M%S}",
        "submitted_at": now.isoformat(timespec="seconds"),
        "source": "admin_center",
        "tenant": {"id": "tenant-contoso", "name": "Contoso", "country": "DE"},
        "requester": {"name": "Alex Wilber", "email": "alex@contoso.example.com",
                      "language": "de-DE"},
        "topic": "core_onboarding",
    }


def ready_banner(settings: Settings, base_url: str, bootstrap: str, dev_key: str | None,
                 workers: int, ops_key: str | None = None) -> str:
    var = settings.var_dir
    key_file = var / "dev-api-key"
    key_line = (f"{dev_key}   (development key, also in {key_file})" if dev_key
                else "from FASTTRACK_API_KEYS (configured)")
    auth = f"$(cat {key_file})" if dev_key else "YOUR_KEY"
    example = example_request(datetime.now(UTC))
    kafka = f"{bootstrap} (embedded, in memory)" if settings.embedded else bootstrap
    return f"""
FastTrack is ready: {base_url}
  API         {base_url}/v1/requests      OpenAPI docs: {base_url}/docs
  Dashboard   {base_url}/dashboard{f"?key={ops_key}" if ops_key else "  (an ops key)"}
  Metrics     {base_url}/metrics
  Kafka       {kafka}, {workers} worker(s)
  Database    {settings.resolved_database_url}
  Logs        {var / "logs"}/  (broker.log, worker-N.log, gateway.log)
  Invites     {settings.resolved_outbox_dir}/  (<uid>.ics and <uid>.eml per invite)
  API key     {key_line}

Submit a request and read its status:
  curl -sS {base_url}/v1/requests -H "Authorization: Bearer {auth}" \\
       -H 'Content-Type: application/json' -d '{json.dumps(example)}'
  curl -sS {base_url}/v1/requests/{example["request_id"]} -H "Authorization: Bearer {auth}"

Ctrl-C stops everything.
"""
