"""Meetings: an index on the active meetings by start, for reading them a page at a time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

The timed work walks every active meeting of the coming months (directory revalidation) and of
the coming day (reminders) in (start_utc, request_id) order, a page at a time. Without this
index each page sorted every active meeting again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    op.create_index("ix_meetings_active_start", "meetings", ["start_utc", "request_id"],
                    sqlite_where=_ACTIVE, postgresql_where=_ACTIVE)


def downgrade() -> None:
    op.drop_index("ix_meetings_active_start", table_name="meetings")
