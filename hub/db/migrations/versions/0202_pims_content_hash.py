"""PIMS rows remember the digest of the record they were normalised from, so a sync can skip
records whose content is unchanged. Existing rows start without one: the next sync normalises
them all once.

Revision ID: 0202_pims_hash
Revises: 0201_providers
"""

import sqlalchemy as sa
from alembic import op

revision = "0202_pims_hash"
down_revision = "0201_providers"
branch_labels = None
depends_on = None

TABLES = ("clients", "patients", "reminders", "appointments", "visits")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("content_hash", sa.String(length=32), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("content_hash")
