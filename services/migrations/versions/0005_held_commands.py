"""Commands that arrive before their request: held until the intake accepts the request.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

A portal publishes a HelpRequest to ``requests.submitted`` and a command about it to
``requests.commands``; the two topics are read by different agents, so a cancel can be read
before its request is accepted (the intake runs behind during a burst, the commands agent does
not). Such a command was dead-lettered and the request went on to be booked and invited. It is
now kept here, with what a dead letter would keep (the record's bytes, key, headers and origin),
until the intake accepts the request or the timed work gives up on it
(``scheduler.held_commands``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "held_commands",
        sa.Column("command_id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("command", sa.String(16), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("record_key", sa.LargeBinary()),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("origin_topic", sa.String(255), nullable=False),
        sa.Column("origin_partition", sa.Integer(), nullable=False),
        sa.Column("origin_offset", sa.BigInteger(), nullable=False),
        sa.Column("held_at", _TS, nullable=False),
    )
    op.create_index("ix_held_commands_request", "held_commands", ["request_id"])
    op.create_index("ix_held_commands_held_at", "held_commands", ["held_at"])


def downgrade() -> None:
    op.drop_index("ix_held_commands_held_at", table_name="held_commands")
    op.drop_index("ix_held_commands_request", table_name="held_commands")
    op.drop_table("held_commands")
