"""clients.comms_disabled may be unknown (NULL): a PIMS that cannot supply the flag says so.

Revision ID: 0201_providers
Revises: 0003_pims
"""

import sqlalchemy as sa
from alembic import op

revision = "0201_providers"
down_revision = "0003_pims"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.alter_column("comms_disabled", existing_type=sa.Boolean(), nullable=True)


def downgrade() -> None:
    # Unknown becomes "not disabled" again, as before this revision.
    op.execute("UPDATE clients SET comms_disabled = false WHERE comms_disabled IS NULL")
    with op.batch_alter_table("clients") as batch:
        batch.alter_column("comms_disabled", existing_type=sa.Boolean(), nullable=False)
