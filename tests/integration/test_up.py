"""`fasttrack up --no-demo` end to end, as a newcomer runs it: one request in, one invite out,
Ctrl-C, nothing left running.

Real components throughout: the embedded broker, a Faust worker, the gateway, SQLite under a
temporary var/, the file outbox. Needs `fasttrack worker`, `fasttrack gateway` and `fasttrack up`
in the CLI; until they exist this test fails (it does not skip).
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 120.0
INVITED_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass
class RunningUp:
    process: subprocess.Popen[str]
    var_dir: Path
    base_url: str
    output: list[str] = field(default_factory=list)
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def start_reading(self) -> None:
        def pump() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self._lines.put(line)
            self._lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for_output(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"`fasttrack up` exited with {self.process.wait()} before printing "
                            f"{text!r}:\n{self.transcript()}", pytrace=False)
            self.output.append(line)
            if text.lower() in line.lower():
                return
        pytest.fail(f"no {text!r} from `fasttrack up` within {timeout:.0f} s:\n"
                    f"{self.transcript()}", pytrace=False)

    def transcript(self) -> str:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.output.append(line)
        logs = self.var_dir / "logs"
        tails = [f"--- {log.name} ---\n" + "\n".join(log.read_text(errors="replace")
                                                    .splitlines()[-30:])
                 for log in sorted(logs.glob("*.log"))] if logs.is_dir() else []
        return "".join(self.output) + "\n".join(tails)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid` (children in other sessions too): pid -> start time."""
    parents: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        child = int(stat.parent.name)
        parents.setdefault(int(fields[1]), []).append(child)
        started[child] = fields[19]
    found: dict[int, str] = {}
    pending = [pid]
    while pending:
        for child in parents.get(pending.pop(), []):
            found[child] = started[child]
            pending.append(child)
    return found


def still_running(processes: dict[int, str]) -> list[str]:
    alive = []
    for pid, start in processes.items():
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if fields[19] == start and fields[0] != "Z":
            alive.append(f"{pid} {Path(f'/proc/{pid}/cmdline').read_bytes()!r}")
    return alive


@pytest.fixture
def up(tmp_path: Path) -> Iterator[RunningUp]:
    var_dir = tmp_path / "var"
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("FASTTRACK_")}
    env |= {"FASTTRACK_VAR_DIR": str(var_dir), "FASTTRACK_HTTP_PORT": str(port),
            "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--no-demo"], cwd=tmp_path, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    running = RunningUp(process, var_dir, f"http://127.0.0.1:{port}")
    running.start_reading()
    spawned: dict[int, str] = {}
    try:
        yield running
    finally:
        if process.poll() is None:
            spawned = descendants(process.pid)
            process.kill()
            process.wait()
        for line in still_running(spawned):
            os.kill(int(line.split()[0]), signal.SIGKILL)


def help_request(request_id: str) -> dict[str, object]:
    return {
        "request_id": request_id,
        "submitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": "admin_center",
        "tenant": {"id": "tenant-us-1", "name": "Contoso US", "country": "US"},
        "requester": {"name": "Megan Bowen", "email": "megan@contoso.example.com",
                      "language": "en-US"},
        "topic": "core_onboarding",
    }


def wait_until_invited(client: httpx.Client, request_id: str, up: RunningUp) -> dict[str, object]:
    deadline = time.monotonic() + INVITED_TIMEOUT
    last: dict[str, object] = {}
    while time.monotonic() < deadline:
        response = client.get(f"/v1/requests/{request_id}")
        if response.status_code == 200:
            last = response.json()
            if last["status"] == "invited":
                return last
            assert last["status"] not in ("escalated", "rejected", "cancelled"), last
        time.sleep(0.5)
    pytest.fail(f"{request_id} not invited within {INVITED_TIMEOUT:.0f} s; last status {last}\n"
                f"{up.transcript()}", pytrace=False)


def test_up_books_and_invites_one_request_then_stops_cleanly_on_ctrl_c(up: RunningUp) -> None:
    up.wait_for_output("ready", READY_TIMEOUT)
    assert httpx.get(f"{up.base_url}/healthz", timeout=5).status_code == 200
    key_file = up.var_dir / "dev-api-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()

    with httpx.Client(base_url=up.base_url, timeout=10,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        posted = client.post("/v1/requests", json=help_request("up-e2e-0001"))
        assert posted.status_code == 202, posted.text
        status = wait_until_invited(client, "up-e2e-0001", up)

    meeting = status["meeting"]
    assert isinstance(meeting, dict) and status["center_id"]
    outbox = up.var_dir / "outbox"
    assert (outbox / f"{meeting['uid']}.ics").is_file(), sorted(p.name for p in outbox.iterdir())
    assert (outbox / f"{meeting['uid']}.eml").is_file()

    spawned = descendants(up.process.pid)
    assert len(spawned) >= 3, f"expected broker, worker and gateway below `up`: {spawned}"
    up.process.send_signal(signal.SIGINT)
    try:
        code = up.process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`fasttrack up` still running {STOP_TIMEOUT:.0f} s after SIGINT:\n"
                    f"{up.transcript()}", pytrace=False)
    assert code == 0, up.transcript()
    time.sleep(0.2)
    assert still_running(spawned) == [], "left behind after `fasttrack up` exited"
