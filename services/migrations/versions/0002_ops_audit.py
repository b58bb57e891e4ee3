"""Ops: the audit trail of dead-letter redrives and discards, and each dead letter's record key.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02

``deadletters.record_key`` keeps the original Kafka key so that a redrive reproduces it exactly
(the key of ``requests.routed`` is the center id, not the request id). Dead letters recorded
before it have NULL there and are redriven with the key the topic contract gives.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ops_audit",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("deadletter_id", sa.BigInteger()),
        sa.Column("error_class", sa.String(255)),
        sa.Column("target", sa.String(255)),
        sa.Column("detail", sa.Text()),
    )
    op.create_index("ix_ops_audit_deadletter", "ops_audit", ["deadletter_id"])
    with op.batch_alter_table("deadletters") as batch:
        batch.add_column(sa.Column("record_key", sa.LargeBinary()))


def downgrade() -> None:
    with op.batch_alter_table("deadletters") as batch:
        batch.drop_column("record_key")
    op.drop_index("ix_ops_audit_deadletter", table_name="ops_audit")
    op.drop_table("ops_audit")
