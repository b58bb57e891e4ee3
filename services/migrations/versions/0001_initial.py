"""Initial schema: meetings, requests and their timeline, dead letters, invite deliveries.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Besides the tables, this adds the database's guarantee that no specialist is double-booked
(DESIGN §7): an exclusion constraint on PostgreSQL, triggers on SQLite (safe there because SQLite
runs one write transaction at a time). A migration is a frozen copy of the schema at its time, so
it does not import ``scheduler.db``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)
# scheduler.db.UtcDateTime writes this fixed-width form on SQLite; text order = time order.
_SQLITE_UTC_GLOB = (
    "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T"
    "[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z"
)

PG_NO_OVERLAP = """
ALTER TABLE meetings ADD CONSTRAINT ex_meetings_specialist_overlap
EXCLUDE USING gist (specialist_id WITH =, tstzrange(start_utc, end_utc, '[)') WITH &&)
WHERE (status = 'active')
"""

# RAISE(ABORT) fails the statement with SQLITE_CONSTRAINT_TRIGGER (an IntegrityError).
SQLITE_NO_OVERLAP = [
    """
CREATE TRIGGER tr_meetings_no_overlap_insert BEFORE INSERT ON meetings
WHEN NEW.status = 'active'
BEGIN
    SELECT RAISE(ABORT, 'specialist_busy') WHERE EXISTS (
        SELECT 1 FROM meetings AS m
        WHERE m.specialist_id = NEW.specialist_id AND m.status = 'active'
          AND m.start_utc < NEW.end_utc AND NEW.start_utc < m.end_utc
    );
END
""",
    """
CREATE TRIGGER tr_meetings_no_overlap_update
BEFORE UPDATE OF specialist_id, start_utc, end_utc, status ON meetings
WHEN NEW.status = 'active'
BEGIN
    SELECT RAISE(ABORT, 'specialist_busy') WHERE EXISTS (
        SELECT 1 FROM meetings AS m
        WHERE m.id <> OLD.id
          AND m.specialist_id = NEW.specialist_id AND m.status = 'active'
          AND m.start_utc < NEW.end_utc AND NEW.start_utc < m.end_utc
    );
END
""",
]


def _dialect() -> str:
    return str(op.get_context().dialect.name)


def _meeting_checks() -> list[sa.CheckConstraint]:
    checks = [
        sa.CheckConstraint("status IN ('active', 'cancelled')", name="ck_meetings_status"),
        sa.CheckConstraint("end_utc > start_utc", name="ck_meetings_not_empty"),
    ]
    if _dialect() == "sqlite":
        checks += [
            sa.CheckConstraint(f"{column} GLOB '{_SQLITE_UTC_GLOB}'", name=f"ck_meetings_{column}")
            for column in ("start_utc", "end_utc")
        ]
    return checks


def upgrade() -> None:
    op.create_table(
        "meetings",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("center_id", sa.String(100), nullable=False),
        sa.Column("specialist_id", sa.String(100), nullable=False),
        sa.Column("language", sa.String(35), nullable=False),
        sa.Column("start_utc", _TS, nullable=False),
        sa.Column("end_utc", _TS, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(255), nullable=False),
        sa.Column("join_url", sa.Text()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        *_meeting_checks(),
    )
    op.create_index("ix_meetings_specialist_start", "meetings", ["specialist_id", "start_utc"])
    op.create_index("ix_meetings_uid", "meetings", ["uid"])
    op.create_index(
        "uq_meetings_active_request", "meetings", ["request_id"], unique=True,
        sqlite_where=sa.text("status = 'active'"), postgresql_where=sa.text("status = 'active'"),
    )
    if _dialect() == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(PG_NO_OVERLAP)
    elif _dialect() == "sqlite":
        for trigger in SQLITE_NO_OVERLAP:
            op.execute(trigger)

    op.create_table(
        "requests",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("center_id", sa.String(100)),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("partner_id", sa.String(200)),
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("submitted_at", _TS, nullable=False),
        sa.Column("accepted_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint(
            "status IN ('accepted', 'routed', 'booked', 'invited', 'escalated', 'cancelled', "
            "'rejected', 'deadlettered')",
            name="ck_requests_status",
        ),
    )
    op.create_index("ix_requests_status_updated", "requests", ["status", "updated_at"])

    op.create_table(
        "request_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64),
                  sa.ForeignKey("requests.request_id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.UniqueConstraint("request_id", "fingerprint", name="uq_request_events_fingerprint"),
    )

    op.create_table(
        "deadletters",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64)),
        sa.Column("origin_topic", sa.String(255)),
        sa.Column("origin_partition", sa.Integer()),
        sa.Column("origin_offset", sa.BigInteger()),
        sa.Column("error_class", sa.String(255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.UniqueConstraint("origin_topic", "origin_partition", "origin_offset",
                            name="uq_deadletters_origin"),
        sa.CheckConstraint("state IN ('open', 'redriven', 'discarded')",
                           name="ck_deadletters_state"),
    )
    op.create_index("ix_deadletters_state_at", "deadletters", ["state", "at"])
    op.create_index("ix_deadletters_request", "deadletters", ["request_id"])

    op.create_table(
        "invite_deliveries",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(255), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.UniqueConstraint("uid", "sequence", "method", name="uq_invite_deliveries_message"),
    )
    op.create_index("ix_invite_deliveries_request", "invite_deliveries", ["request_id"])


def downgrade() -> None:
    # The btree_gist extension stays: other schemas in the database may use it.
    for table in ("invite_deliveries", "deadletters", "request_events", "requests", "meetings"):
        op.drop_table(table)
