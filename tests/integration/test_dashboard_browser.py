"""The ops dashboard in a real browser (headless Chromium driven by Playwright) during an
end-to-end run: a real ``fasttrack worker``, the embedded broker, the gateway served by uvicorn.

The page must show the live numbers (invited count as the database has it, topic end offsets as
the broker has them, the request timeline), and a redrive clicked in the page must put the dead
letter back on its origin topic. A screenshot is saved to ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from kafka import KafkaConsumer, TopicPartition

from services.api_keys import parse_api_keys
from services.broker import EmbeddedBroker
from services.gateway import create_gateway
from services.kafka_config import KafkaSettings, kafka_python_producer_kwargs
from services.ops_api import OpsContext, create_ops_router
from services.ops_deadletters import DeadLetterDesk, KafkaRecordSink
from services.ops_kafka import KafkaObserver
from services.publisher import KafkaRequestPublisher
from services.settings import Settings
from services.topics import TopicNames
from tests.integration.test_pipeline import REPO_ROOT, Pipeline, wait_for

pytest_plugins = ["tests.integration.db_fixtures"]
pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO_ROOT / "test-artifacts"
OPS_KEY = "ops-dashboard-key-0123456789"
REQUESTS = 12


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Served:
    """The gateway with the ops router, on a free loopback port, in a background thread."""

    def __init__(self, database_url: str, kafka: KafkaSettings, topics: TopicNames,
                 pipeline: Pipeline) -> None:
        keys = parse_api_keys([{"name": "ops-oncall", "key": OPS_KEY, "kind": "ops"}], "test")
        self.observer = KafkaObserver.for_pipeline(kafka, topics)
        self.sink = KafkaRecordSink(kafka_python_producer_kwargs(kafka))
        app = create_gateway(Settings(), store=pipeline.store,
                             publisher=KafkaRequestPublisher(kafka, topics), keys=keys,
                             clock=_utc_now)
        app.include_router(create_ops_router(OpsContext(
            keys=keys, engine=pipeline.engine, directory=Settings().load_directory(),
            observer=self.observer, desk=DeadLetterDesk(pipeline.engine, self.sink, _utc_now),
            clock=_utc_now)))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        self.thread.start()
        wait_for(lambda: self.server.started, 20, "the gateway to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.observer.close()
        self.sink.close()


@pytest.fixture
def chromium_browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the dashboard test needs Debian's chromium. Run "
                    "`make browser` (apt-get update && apt-get install -y chromium) first.",
                    pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: `make venv` installs it (never run "
                    "`playwright install`; the test drives /usr/bin/chromium)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def pipeline(broker: EmbeddedBroker, topics: TopicNames, tmp_path: Path,
             new_database: Callable[[str], str]) -> Iterator[Pipeline]:
    running = Pipeline(broker, topics, tmp_path, new_database("sqlite"))
    yield running
    running.stop()


def end_offset(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def test_the_dashboard_shows_the_live_pipeline_and_redrives_a_dead_letter(
        pipeline: Pipeline, chromium_browser: Any) -> None:
    pipeline.ready(pipeline.spawn("worker"))
    requests = pipeline.requests(REQUESTS, "dash")
    pipeline.submit_requests(requests)
    pipeline.submit((b"dash-poison", b"\xff\xfe this is not JSON"), partition=0)
    assert pipeline.wait_final([r["request_id"] for r in requests]) == {"invited": REQUESTS}
    [poison] = wait_for(pipeline.store.list_deadletters, 30, "the poison record's dead letter")
    kafka = KafkaSettings(bootstrap=pipeline.broker.bootstrap, embedded=True)

    with Served(pipeline.database_url, kafka, pipeline.topics, pipeline) as served:
        page = chromium_browser.new_page(viewport={"width": 1600, "height": 1200})
        console_errors: list[str] = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{served.url}/dashboard?key={OPS_KEY}")
        assert page.url == f"{served.url}/dashboard"  # the key left the address bar
        # (not wait_for_function: the page's CSP forbids evaluating strings, rightly)
        wait_for(lambda: int(page.locator("body").get_attribute("data-refreshed") or 0) >= 3,
                 20, "three refreshes of the page")

        invited_in_db = pipeline.statuses([r["request_id"] for r in requests])["invited"]
        assert page.get_by_test_id("kpi-invited").inner_text() == str(invited_in_db)
        assert page.get_by_test_id("status-invited").inner_text() == str(invited_in_db)
        assert page.get_by_test_id("latency-count-invited").inner_text() == str(invited_in_db)
        submitted = pipeline.topics.requests_submitted
        expected = end_offset(pipeline.broker.bootstrap, submitted)
        cell = page.get_by_test_id("end-offset-requests.submitted")
        assert int(cell.inner_text().replace(",", "")) == expected
        assert int(page.get_by_test_id("flow-chart").get_attribute("data-points") or 0) > 0
        assert page.locator("#centers-table tbody tr").count() == 15
        assert page.locator("#lag-table tbody tr").count() >= 6

        page.locator("#recent-table tbody tr").first.click()
        page.get_by_test_id("detail-reasons").wait_for()
        assert page.get_by_test_id("detail-reasons").inner_text() != "–"

        row = page.get_by_test_id(f"dl-row-{poison.id}")
        assert "Unprocessable" in row.inner_text()
        page.get_by_test_id("dl-class-Unprocessable").wait_for()
        page.get_by_test_id(f"redrive-{poison.id}").click()
        row.wait_for(state="detached", timeout=10_000)
        assert "redrive" in page.get_by_test_id("audit-table").inner_text()
        assert "ops-oncall" in page.get_by_test_id("audit-table").inner_text()

        # Still poison: the pipeline dead-letters the redriven record again, carrying the marker.
        def again() -> Any:
            return [d for d in pipeline.store.list_deadletters() if d.id != poison.id]
        [second] = wait_for(again, 30, "the redriven record to come back as a dead letter")
        assert json.loads(second.headers["redriven_from"])["deadletter_id"] == poison.id
        page.get_by_test_id(f"dl-row-{second.id}").wait_for(timeout=10_000)
        page.get_by_test_id(f"dl-row-{second.id}").get_by_role("button", name="Inspect").click()
        page.locator("tr.dl-detail pre").wait_for()

        page.mouse.wheel(0, -100_000)  # the sticky header belongs at the top of the picture
        page.wait_for_timeout(300)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        assert console_errors == []
