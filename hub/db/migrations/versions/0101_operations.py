"""Operations: instances.purged_at — the file was deleted by retention; the row is kept.

Revision ID: 0101_operations
Revises: 0002_imaging
"""

import sqlalchemy as sa
from alembic import op

from hub.db.types import UTCDateTime

revision = "0101_operations"
down_revision = "0002_imaging"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("purged_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("purged_at")
