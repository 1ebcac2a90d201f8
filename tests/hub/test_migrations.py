"""The shipped migrations build exactly the schema the models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import hub.db.all_models  # noqa: F401
from hub.db import migrate
from hub.db.base import Base
from hub.db.engine import make_engine


async def test_migrations_match_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate.upgrade(engine)
        await migrate.ensure_current(engine)

        def _diff(conn):  # type: ignore[no-untyped-def]
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, Base.metadata)

        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
        assert diff == []
    finally:
        await engine.dispose()


async def test_schema_behind_is_refused(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate.upgrade(engine, "0001_core")
        try:
            await migrate.ensure_current(engine)
        except migrate.SchemaBehind as err:
            assert "vethub db upgrade" in str(err)
        else:
            raise AssertionError("a schema behind head was accepted")
    finally:
        await engine.dispose()
