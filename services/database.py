"""Bring a database to the current schema, from code (service start, tests) rather than a shell."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import as_file, files

from alembic import command
from alembic.config import Config


def upgrade_database(url: str, revision: str = "head") -> None:
    """Run the alembic migrations shipped in this package against ``url`` up to ``revision``."""
    with _config(url) as config:
        command.upgrade(config, revision)


def downgrade_database(url: str, revision: str) -> None:
    """Undo the migrations applied to ``url`` after ``revision``."""
    with _config(url) as config:
        command.downgrade(config, revision)


@contextmanager
def _config(url: str) -> Iterator[Config]:
    with as_file(files("services").joinpath("alembic.ini")) as ini:
        config = Config(str(ini))
        config.attributes["url"] = url  # not via the ini: a '%' in a password would break it
        config.attributes["embedded"] = True
        yield config
