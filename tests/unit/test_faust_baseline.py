"""The Faust baseline's stages pass on the pipeline's own bytes, hop by hop, and do nothing else."""

from __future__ import annotations

import json
from pathlib import Path

from consumers.envelope import Emit, Origin
from services.faust_baseline import EMITS, NoCommands, PassThrough, read_table, write_table

TABLE = {
    "r-1": [(b"taipei", b'{"request":{"request_id":"r-1"},"decision":{}}'),
            (b"r-1", b'{"request":{"request_id":"r-1"},"meeting":{}}'),
            (b"r-1", b'{"request_id":"r-1","status":"delivered"}')],
    "r-2": [(b"dublin", "{\"request\":{\"request_id\":\"r-2\",\"note\":\"Grüße\"}}".encode()),
            (b"r-2", b'{"request":{"request_id":"r-2"}}'),
            (b"r-2", b'{"request_id":"r-2"}')],
}


def test_each_stage_emits_the_next_hops_bytes_for_the_records_request() -> None:
    stages = [PassThrough(hop, emits, TABLE) for hop, emits in enumerate(EMITS)]
    value = json.dumps({"request_id": "r-2"}).encode()  # what the intake reads
    for hop, stage in enumerate(stages):
        (emit,) = stage.handle(value, Origin("t", 0, hop))
        assert emit == Emit(EMITS[hop], *TABLE["r-2"][hop])
        value = emit.value  # what the next stage reads: the request nested, or its id
    assert [e.topic for o in stages[0].handle_batch([
        (b'{"request_id":"r-1"}', Origin("t", 0, 1)),
        (b'{"request_id":"r-2"}', Origin("t", 0, 2))]) for e in o] == ["requests_routed"] * 2
    assert NoCommands().handle_batch([(b"{}", Origin("c", 0, 0))]) == [[]]


def test_the_table_reaches_the_worker_unchanged(tmp_path: Path) -> None:
    write_table(TABLE, tmp_path / "table.json")
    assert read_table(tmp_path / "table.json") == TABLE
