"""``fasttrack bench --stages-only``: the CPU a request costs in each stage, by batch size.

A worker's stages take what one fetch brought: hundreds of records in a flood, one or two at a
steady load, where each batch's own costs (a transaction, its statements, the outbox's fsyncs)
are paid for each record. This runs the three stages in this process, as a worker calls them
(``handle_batch``), on a fresh SQLite file and outbox for each batch size, with no broker: the
emits of one stage are the records of the next. It reports the process's CPU time per request
(``time.process_time``: the process's Python and SQLite work, the kernel's for the fsyncs),
stage by stage, after a warm-up batch of the same size.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from consumers.envelope import Origin
from consumers.stages import Outcome, Record
from services.bootstrap import build_runtime
from services.host_probe import HostSpeed, probe_host
from services.sample_requests import sample_requests
from services.settings import Settings

DEFAULT_BATCH_SIZES = (1, 10, 50)
#: The stages in pipeline order, with the topic each reads and the emit it passes on.
STAGES = (("intake", "requests.submitted", "requests_routed"),
          ("booker", "requests.routed", "meetings_booked"),
          ("notifier", "meetings.booked", None))
WARMUP = 100


class StageFailed(RuntimeError):
    """A stage returned an error for a request the benchmark made valid."""


@dataclass
class StageReport:
    requests: int
    #: batch size -> stage -> CPU ms per request
    cpu_ms: dict[int, dict[str, float]] = field(default_factory=dict)
    host: HostSpeed | None = None  # measured just before the stages

    def to_json_dict(self) -> dict[str, Any]:
        return {"database": "sqlite", "requests": self.requests, "batches": [
            {"batch_size": size, "cpu_ms_per_request": {
                **{stage: round(ms, 3) for stage, ms in stages.items()},
                "total": round(sum(stages.values()), 3)}}
            for size, stages in sorted(self.cpu_ms.items())]}


def run_stage_bench(settings: Settings, now: datetime, *, requests: int = 1000,
                    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                    progress: Callable[[str], None] | None = None) -> StageReport:
    """Time ``requests`` requests through the stages at each batch size (SQLite, outbox)."""
    say = progress or (lambda text: None)
    report = StageReport(requests)
    # One folder for every batch size, removed at the end: on ext4, files created just after
    # thousands were deleted cost several times the kernel time (the allocator passes over
    # inodes freed but not yet committed), which charged the notifier of each batch size after
    # the first for the cleanup of the one before it.
    with tempfile.TemporaryDirectory(prefix="stages-") as top:
        report.host = probe_host(Path(top) / "host-probe")
        for size in batch_sizes:
            folder = Path(top) / f"batches-of-{size}"
            runtime = build_runtime(settings.model_copy(update={
                "var_dir": folder, "database_url": None, "outbox_dir": None}))
            try:
                stages = runtime.stages()
                handlers = {"intake": stages.submission.handle_batch,
                            "booker": stages.booking.handle_batch,
                            "notifier": stages.invitation.handle_batch}
                values = [json.dumps(body).encode() for body in sample_requests(
                    WARMUP + requests, now, prefix=f"stages-{size}")]
                _through(handlers, values[:WARMUP], size)
                report.cpu_ms[size] = {stage: seconds * 1000 / requests for stage, seconds
                                       in _through(handlers, values[WARMUP:], size).items()}
            finally:
                runtime.engine.dispose()
            say(f"batches of {size}: {sum(report.cpu_ms[size].values()):.2f} ms of CPU "
                "per request")
    return report


def _through(handlers: dict[str, Callable[[Sequence[Record]], list[Outcome]]],
             values: list[bytes], size: int) -> dict[str, float]:
    """Pass ``values`` through every stage in batches of ``size``: CPU seconds per stage."""
    spent: dict[str, float] = {}
    offset = 0
    for stage, topic, passes_on in STAGES:
        handle, emitted, spent[stage] = handlers[stage], [], 0.0
        for start in range(0, len(values), size):
            records = []
            for value in values[start:start + size]:
                offset += 1
                records.append((value, Origin(topic, 0, offset)))
            started = time.process_time()
            outcomes = handle(records)
            spent[stage] += time.process_time() - started
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    raise StageFailed(f"{stage}: {outcome!r}") from outcome
                emitted += [emit.value for emit in outcome if emit.topic == passes_on]
        values = emitted
    return spent


def format_stage_report(report: StageReport) -> str:
    stages = [stage for stage, _, _ in STAGES]
    lines = [f"stages in one process, SQLite and outbox, {report.requests} requests per batch "
             "size: CPU ms per request",
             *([f"host, before the run: {report.host.describe()}"] if report.host else []),
             "  batch size " + "".join(f"{stage:>10}" for stage in stages) + f"{'total':>10}"]
    for size, spent in sorted(report.cpu_ms.items()):
        lines.append(f"  {size:>10} " + "".join(f"{spent[s]:>10.2f}" for s in stages)
                     + f"{sum(spent.values()):>10.2f}")
    return "\n".join(lines)
