"""``fasttrack bench`` on a tiny run against the embedded broker: it measures and reports
well-formed output. Performance itself is judged by the benchmark, never by a timed test."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services import bench, cli
from services.bench import JSON_KEYS, run_bench
from services.broker import EmbeddedBroker
from services.settings import Settings

pytest_plugins = ["tests.integration.db_fixtures"]
pytestmark = pytest.mark.slow


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr(bench, "PLUMBING_MIN_RECORDS", 200)
    return Settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True, var_dir=tmp_path,
                    database_url=None, directory=None)


@pytest.mark.parametrize("dialect", ["sqlite",
                                     pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_tiny_run_prints_the_json_contract(
        settings: Settings, dialect: str, new_database: Callable[[str], str],
        capsys: pytest.CaptureFixture[str]) -> None:
    url = new_database(dialect) if dialect == "postgresql" else None

    code = run_bench(settings, requests=40, database_url=url, json_output=True, workers=1)

    out = capsys.readouterr()
    assert code == 0, out.err
    result = json.loads(out.out)
    assert tuple(result) == JSON_KEYS
    assert result["database"] == dialect and result["requests"] == 40
    assert result["baseline_per_s"] > 0 and result["pipeline_per_s"] > 0
    # the ratio is of the unrounded rates; each rate is printed to 0.1 (up to 0.05 off), the
    # ratio itself to 5 decimals
    rounding = 0.05 / result["pipeline_per_s"] + 0.05 / result["baseline_per_s"]
    assert result["ratio"] == pytest.approx(result["pipeline_per_s"] / result["baseline_per_s"],
                                            rel=rounding + 1e-4)
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert "plumbing:" in out.err and "paced" in out.err  # progress goes to stderr


def test_the_human_report_names_both_rates_the_ratio_and_the_stages(
        settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_bench(settings, requests=30, workers=2, paced_rate=20.0)

    text = capsys.readouterr().out
    assert code == 0
    for expected in ("plumbing limit", "pipeline, max sustained", "ratio", "p99",
                     "where the time goes", "submitted → intake start",
                     "notifier start → invite written", "outcomes: flood 30 ",
                     "open loop at 20.0/s (fixed by --paced-rate)",
                     "(target p99 < 500 ms: no verdict: not at half of max)",
                     "worker CPU per request: flood ", " ms, paced run ",
                     " ms (all stages, all workers)", "left the batch path: ",
                     "host, before the run: a fixed Python loop ", " µs of CPU, "):
        assert expected in text
    assert "broker CPU per request" not in text  # a broker of the fixture's, not the bench's
    assert list((settings.var_dir / "bench").glob("*/worker-2.log"))
    (line,) = [line for line in text.splitlines() if line.startswith("  by thread: ")]
    phases = re.findall(r"(flood|paced run) stages (\d+\.\d), faust loop (\d+\.\d), "
                        r"other threads (\d+\.\d) ms", line)
    assert [phase for phase, *_ in phases] == ["flood", "paced run"], line
    for _, stages, loop, _other in phases:
        assert float(stages) > 0 and float(loop) > 0, line  # the workers' named stage threads


def test_a_soak_at_a_given_rate_samples_the_workers_memory(
        settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_bench(settings, requests=10, workers=1, soak_seconds=2.0, soak_rate=5.0)

    captured = capsys.readouterr()
    assert code == 0
    assert "soak: 10 requests at 5.0/s for 2 s" in captured.err
    assert "soak: 10/10 finished" in captured.err
    soak_cpu = float(captured.err.split("worker CPU ")[1].split(" ms per request")[0])
    assert soak_cpu > 0
    assert f", soak {soak_cpu:.1f} ms (all stages, all workers)" in captured.out
    samples = captured.out.split("worker RSS (MiB): ")[1].split()[::2]  # "165 → 166 ..."
    assert len(samples) >= 2 and all(int(mib) > 0 for mib in samples)  # the soak's start, end
    soak = captured.out.split("soak latency at 5.0/s, 10 invited: p50 ")[1].splitlines()[0]
    p50, p95, p99 = (float(part.split()[-2]) for part in soak.split(";")[0].split(", "))
    assert 0 < p50 <= p95 <= p99
    by_minute = soak.split("p99 by minute of sending: ")[1]
    minute_p99, unit = by_minute.split()  # 2 s of sending: one minute, the whole soak's p99
    assert unit == "ms" and abs(float(minute_p99) - p99) <= 0.55  # printed to 1 ms and 0.1 ms
    cpu = captured.out.split("soak CPU by minute, % of a core (workers/broker): ")[1]
    workers, broker = cpu.splitlines()[0].split("/")  # one minute
    assert int(workers) > 0 and (broker == "-" or int(broker) >= 0)  # "-": not our broker


def test_the_bench_counts_the_cpu_of_its_own_broker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench, "PLUMBING_MIN_RECORDS", 200)
    own_broker = Settings(kafka_bootstrap=None, var_dir=tmp_path, database_url=None,
                          directory=None)
    code = run_bench(own_broker, requests=20, workers=1, paced_rate=10.0, faust_baseline=True)

    text = capsys.readouterr().out
    assert code == 0
    (line,) = [line for line in text.splitlines() if line.startswith("broker CPU per request")]
    phases = re.findall(r"(flood|paced run) (\d+\.\d) ms", line)
    assert [name for name, _ in phases] == ["flood", "paced run"]
    assert all(float(ms) > 0 for _, ms in phases), line  # it polls and serves every phase
    assert line.endswith("(the embedded broker)")
    # the framework alone, on the same broker: its app moved all 200 records
    (faust,) = [line for line in text.splitlines() if line.startswith("faust limit")]
    rate, share, workers, broker = map(float, re.fullmatch(
        r"faust limit \(the pipeline's app, no stage work\) +(\d+\.\d) requests/s "
        r"\((\d+\.\d) % of plumbing; CPU a request: workers (\d+\.\d\d) ms, broker "
        r"(\d+\.\d\d) ms\)", faust).groups())  # type: ignore[union-attr]
    assert rate > 0 and share > 0 and workers > 0 and broker > 0, faust
    assert list((tmp_path / "bench").glob("*/faust-baseline/worker-1.log"))


@pytest.mark.parametrize("argv,message", [
    (["--soak-rate", "5"], "--soak-rate needs --soak SECONDS"),
    (["--soak", "60", "--soak-rate", "0"], "--soak-rate: 0.0 is not a positive rate"),
    (["--paced-rate", "-1"], "--paced-rate: -1.0 is not a positive rate"),
    (["--faust-baseline", "--stages-only"], "--faust-baseline runs beside the pipeline"),
])
def test_bench_refuses_a_rate_it_cannot_use(argv: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", *argv]) == cli.EXIT_INVALID
    assert message in capsys.readouterr().err


def test_fallbacks_are_counted_from_the_worker_logs(tmp_path: Path) -> None:
    """The workers' own log lines (Faust's prefix, then structlog's JSON), other lines
    ignored, a damaged one skipped."""
    prefix = "[2026-11-24 07:08:46,242] [6808] [WARNING] "
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    logs[0].write_text("\n".join([
        prefix + '{"stage": "booker", "records": 3, "reason": "locked_elsewhere", '
                 '"event": "bookings_set_aside", "level": "info"}',
        prefix + '{"stage": "booker", "records": 40, "error": "OperationalError", '
                 '"event": "batch_one_by_one", "level": "warning"}',
        prefix + '{"topic": "t", "partitions": [1], "event": "partitions_assigned"}',
        prefix + '{"stage": "notifier", "event": "batch_one_by_one", ',
        "[2026-11-24 07:08:46,243] [6808] [INFO] [^Worker]: Starting... ",
    ]) + "\n")
    logs[1].write_text(prefix + '{"stage": "booker", "records": 2, '
                                '"event": "bookings_set_aside"}\n')

    assert bench.fallback_counts([*logs, tmp_path / "missing.log"]) == {
        "booker: bookings set aside (another batch's lock)": 5,
        "booker: batches one by one": 1}


def test_core_only_prints_the_micro_benchmark_as_json(
        settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_bench(settings, requests=10, core_only=True, json_output=True,
                     core_sizes=(1000, 2000))

    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [row["ledger_size"] for row in result["booking"]] == [1000, 2000]
    assert result["routing_median_us"] > 0


def _children(pid: int) -> set[int]:
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1]
                                           .split()[1]) == pid:
                found.add(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return found


def _running(pid: int) -> bool:
    """A live process: not gone, and not a zombie that nobody reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def _bench_started(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], set[int]]]:
    """A ``fasttrack bench`` with its own broker, once it is starting its two workers, and its
    children then; whatever is left of them is killed afterwards."""
    env = {**os.environ, "FASTTRACK_VAR_DIR": str(tmp_path)}
    env.pop("FASTTRACK_KAFKA_BOOTSTRAP", None)
    bench_run = subprocess.Popen([sys.executable, "-m", "services.cli", "bench",
                                  "--requests", "10", "--workers", "2"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
    assert bench_run.stderr is not None
    started: set[int] = set()
    try:
        for line in bench_run.stderr:  # the broker is up, the workers are being started
            if "pipeline: waiting for" in line:
                break
        else:
            pytest.fail("the bench ended before starting its workers")
        started = _children(bench_run.pid)
        assert len(started) >= 3, started  # the broker and two workers at least
        yield bench_run, started
    finally:
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if bench_run.poll() is None:
            bench_run.kill()


def _still_running(pids: set[int]) -> list[int]:
    """Those of ``pids`` still running after up to 15 s."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_running(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if _running(p)]


def test_a_bench_killed_with_sigkill_leaves_no_process_behind(tmp_path: Path) -> None:
    with _bench_started(tmp_path) as (bench_run, started):
        bench_run.kill()  # no shutdown code runs
        bench_run.wait(timeout=10)
        assert _still_running(started) == []


def test_sigterm_stops_the_broker_and_workers_the_bench_started(tmp_path: Path) -> None:
    with _bench_started(tmp_path) as (bench_run, started):
        bench_run.send_signal(signal.SIGTERM)
        assert bench_run.wait(timeout=60) == 128 + signal.SIGTERM
        assert _still_running(started) == []
