"""Inbound email: every message delivered to the hub, raw, and what processing made of it.

Revision ID: 0701_inbound
Revises: 0004_messaging
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from hub.db.types import UTCDateTime

revision = "0701_inbound"
down_revision = "0004_messaging"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "inbound_emails",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("peer", sa.String(length=255), nullable=False),
        sa.Column("source_key", sa.String(length=255), nullable=True),
        sa.Column("mail_from", sa.String(length=320), nullable=False),
        sa.Column("rcpt_to", JSON, nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=True),
        sa.Column("authenticated", sa.Boolean(), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=True),
        sa.Column("communication_id", sa.Integer(), nullable=True),
        sa.Column("outcome", JSON, nullable=False),
        sa.Column("processed_at", UTCDateTime(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_emails")),
        sa.UniqueConstraint("source_key", name=op.f("uq_inbound_emails_source_key")),
    )
    op.create_index(op.f("ix_inbound_emails_state"), "inbound_emails", ["state"], unique=False)
    op.create_index("ix_inbound_emails_address_kind", "inbound_emails", ["address", "kind"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_inbound_emails_address_kind", table_name="inbound_emails")
    op.drop_index(op.f("ix_inbound_emails_state"), table_name="inbound_emails")
    op.drop_table("inbound_emails")
