"""Alembic environment: migrations run on a connection the hub hands in."""

from alembic import context

import hub.db.all_models  # noqa: F401
from hub.db.base import Base

target_metadata = Base.metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `vethub db upgrade` (hub.db.migrate.upgrade)")

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
