"""Meetings: an active meeting lasts at most 8 hours, and SQLite's overlap check relies on it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

SQLite's no-overlap triggers (0001) looked for an active meeting of the specialist that starts
before the new one ends and ends after it starts. The index on (specialist_id, start_utc) bounds
only the first condition, so every insert walked the specialist's whole history, and each
booking got slower as the ledger grew. A meeting lasts at most 8 hours (the directory's longest
``meeting_minutes``; ``scheduler.ledger.MAX_MEETING``), so one that overlaps the new meeting
started less than 8 hours before it: the triggers now bound the walk from there (9 hours, a
margin for the length check's rounding), and refuse an active meeting longer than 8 hours.
PostgreSQL's exclusion constraint searches its GiST index by range and needs no bound; it gets
the same rule as a CHECK constraint.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PG_AT_MOST_8_HOURS = """
ALTER TABLE meetings ADD CONSTRAINT ck_meetings_at_most_8_hours
CHECK (status <> 'active' OR end_utc - start_utc <= interval '8 hours')
"""

# julianday() is a double, whole milliseconds: half a second of tolerance for exactly 8 hours.
_TOO_LONG = "julianday(NEW.end_utc) - julianday(NEW.start_utc) > (8 * 3600 + 0.5) / 86400.0"
# Text order is time order for the stored form (0001), and a prefix sorts first, so the bound
# to the second is at or below the exact one. COALESCE: no bound rather than no check.
_EARLIEST = "COALESCE(strftime('%Y-%m-%dT%H:%M:%S', NEW.start_utc, '-9 hours'), '')"
_HEADS = {
    "insert": "CREATE TRIGGER tr_meetings_no_overlap_insert BEFORE INSERT ON meetings",
    "update": "CREATE TRIGGER tr_meetings_no_overlap_update\n"
              "BEFORE UPDATE OF specialist_id, start_utc, end_utc, status ON meetings",
}
_OTHER = {"insert": "", "update": "m.id <> OLD.id\n          AND "}


def _trigger(kind: str, bounded: bool) -> str:
    """The no-overlap trigger: as 0001 made it, or ``bounded`` as described above."""
    too_long = (f"\n    SELECT RAISE(ABORT, 'meeting_too_long') WHERE {_TOO_LONG};"
                if bounded else "")
    since = f"\n          AND m.start_utc > {_EARLIEST}" if bounded else ""
    return f"""{_HEADS[kind]}
WHEN NEW.status = 'active'
BEGIN{too_long}
    SELECT RAISE(ABORT, 'specialist_busy') WHERE EXISTS (
        SELECT 1 FROM meetings AS m
        WHERE {_OTHER[kind]}m.specialist_id = NEW.specialist_id AND m.status = 'active'{since}
          AND m.start_utc < NEW.end_utc AND NEW.start_utc < m.end_utc
    );
END
"""


def _replace_sqlite_triggers(bounded: bool) -> None:
    for kind in ("insert", "update"):
        op.execute(f"DROP TRIGGER tr_meetings_no_overlap_{kind}")
        op.execute(_trigger(kind, bounded))


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(PG_AT_MOST_8_HOURS)
    elif dialect == "sqlite":
        longer = op.get_bind().exec_driver_sql(
            "SELECT count(*) FROM meetings AS NEW WHERE NEW.status = 'active' AND "
            f"{_TOO_LONG}").scalar()
        if longer:
            raise RuntimeError(f"{longer} active meeting(s) last longer than 8 hours; "
                               "shorten or cancel them, then migrate again")
        _replace_sqlite_triggers(bounded=True)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("ALTER TABLE meetings DROP CONSTRAINT ck_meetings_at_most_8_hours")
    elif dialect == "sqlite":
        _replace_sqlite_triggers(bounded=False)
