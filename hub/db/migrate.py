"""Apply and check the Alembic migrations that ship inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaBehind(RuntimeError):
    """The database is not at the migrations' heads."""


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_heads() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


async def upgrade(engine: AsyncEngine, target: str = "heads") -> None:
    def _run(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), target)

    async with engine.begin() as conn:
        await conn.run_sync(_run)


async def current_heads(engine: AsyncEngine) -> set[str]:
    def _read(connection: Connection) -> set[str]:
        return set(MigrationContext.configure(connection).get_current_heads())

    async with engine.connect() as conn:
        return await conn.run_sync(_read)


async def ensure_current(engine: AsyncEngine) -> None:
    current, expected = await current_heads(engine), script_heads()
    if current != expected:
        missing = ", ".join(sorted(expected - current)) or "none"
        raise SchemaBehind(
            f"the database schema is not at the current migration (at: {sorted(current) or 'empty'};"
            f" missing: {missing}). Run `vethub db upgrade` first."
        )
