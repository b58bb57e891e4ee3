"""Alembic environment: run the migrations with ``scheduler.db``'s engine settings.

The URL comes from ``config.attributes["url"]`` (``services.database.upgrade_database``) or from
``alembic -x url=...`` on the command line.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from scheduler.db import create_engine_for, metadata, owned_by_migrations

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("no database URL: pass -x url=sqlite:///PATH or -x url=postgresql://...")
    return str(url)


def run_offline(url: str) -> None:
    """``alembic upgrade --sql``: print the DDL instead of running it."""
    context.configure(url=url, target_metadata=metadata, literal_binds=True,
                      include_object=owned_by_migrations)
    with context.begin_transaction():
        context.run_migrations()


def run_online(url: str) -> None:
    """Migrate inside one transaction (PostgreSQL and SQLite both have transactional DDL)."""
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                include_object=owned_by_migrations,
                render_as_batch=connection.dialect.name == "sqlite",  # SQLite lacks ALTER COLUMN
                # create_engine_for has SQLAlchemy emit BEGIN on SQLite, so its DDL is atomic too.
                transactional_ddl=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


# Only the alembic command line owns logging; the service configures its own.
if config.config_file_name is not None and not config.attributes.get("embedded"):
    fileConfig(config.config_file_name)

if context.is_offline_mode():
    run_offline(_url())
else:
    run_online(_url())
