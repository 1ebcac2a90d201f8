"""Messaging: communications, status history, inbound messages, consent ledger, suppressions.

client_id columns are plain integers (no foreign key): the clients table belongs to the PIMS
domain, whose migration is on another branch from this one.

Revision ID: 0004_messaging
Revises: 0001_core
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from hub.db.types import UTCDateTime

revision = "0004_messaging"
down_revision = "0001_core"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "address_suppressions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_address_suppressions")),
        sa.UniqueConstraint(
            "kind", "address", "reason", name=op.f("uq_address_suppressions_kind_address_reason")
        ),
    )
    op.create_table(
        "communications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=True),
        sa.Column("company_id", sa.Integer(), nullable=True),
        sa.Column("client_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("template", sa.String(length=100), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("cc", JSON, nullable=False),
        sa.Column("postal_address", JSON, nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body_text", sa.Text(), nullable=True),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("postcard_front_html", sa.Text(), nullable=True),
        sa.Column("postcard_back_html", sa.Text(), nullable=True),
        sa.Column("headers", JSON, nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("verdict_reasons", JSON, nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("provider_id", sa.String(length=255), nullable=True),
        sa.Column("fallback_channels", JSON, nullable=False),
        sa.Column("fallback_of_id", sa.Integer(), nullable=True),
        sa.Column("context", JSON, nullable=False),
        sa.Column("not_before", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_communications_company_id_companies")
        ),
        sa.ForeignKeyConstraint(
            ["fallback_of_id"],
            ["communications.id"],
            name=op.f("fk_communications_fallback_of_id_communications"),
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_communications_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_communications")),
    )
    op.create_index("ix_communications_address", "communications", ["address"], unique=False)
    op.create_index(
        "ix_communications_channel_provider_id",
        "communications",
        ["channel", "provider_id"],
        unique=False,
    )
    op.create_index(
        "ix_communications_client_id_created_at",
        "communications",
        ["client_id", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_communications_company_id"), "communications", ["company_id"], unique=False
    )
    op.create_index(
        op.f("ix_communications_practice_id"), "communications", ["practice_id"], unique=False
    )
    op.create_index(op.f("ix_communications_status"), "communications", ["status"], unique=False)
    op.create_table(
        "consent_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=True),
        sa.Column("practice_id", sa.Integer(), nullable=True),
        sa.Column("address", sa.String(length=320), nullable=True),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_consent_records_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_records")),
    )
    op.create_index("ix_consent_records_address", "consent_records", ["address"], unique=False)
    op.create_index(
        "ix_consent_records_client_id_at", "consent_records", ["client_id", "at"], unique=False
    )
    op.create_table(
        "communication_statuses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("communication_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("provider_status", sa.String(length=64), nullable=True),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("detail", JSON, nullable=True),
        sa.ForeignKeyConstraint(
            ["communication_id"],
            ["communications.id"],
            name=op.f("fk_communication_statuses_communication_id_communications"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_communication_statuses")),
    )
    op.create_index(
        op.f("ix_communication_statuses_communication_id"),
        "communication_statuses",
        ["communication_id"],
        unique=False,
    )
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("from_address", sa.String(length=320), nullable=False),
        sa.Column("to_address", sa.String(length=320), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("provider_id", sa.String(length=255), nullable=True),
        sa.Column("client_id", sa.Integer(), nullable=True),
        sa.Column("practice_id", sa.Integer(), nullable=True),
        sa.Column("communication_id", sa.Integer(), nullable=True),
        sa.Column("raw", JSON, nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["communication_id"],
            ["communications.id"],
            name=op.f("fk_inbound_messages_communication_id_communications"),
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"],
            ["practices.id"],
            name=op.f("fk_inbound_messages_practice_id_practices"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
        sa.UniqueConstraint("provider_id", name=op.f("uq_inbound_messages_provider_id")),
    )
    op.create_index(
        op.f("ix_inbound_messages_client_id"), "inbound_messages", ["client_id"], unique=False
    )
    op.create_index(
        op.f("ix_inbound_messages_communication_id"),
        "inbound_messages",
        ["communication_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_inbound_messages_from_address"), "inbound_messages", ["from_address"], unique=False
    )
    op.create_index(
        op.f("ix_inbound_messages_practice_id"), "inbound_messages", ["practice_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_inbound_messages_practice_id"), table_name="inbound_messages")
    op.drop_index(op.f("ix_inbound_messages_from_address"), table_name="inbound_messages")
    op.drop_index(op.f("ix_inbound_messages_communication_id"), table_name="inbound_messages")
    op.drop_index(op.f("ix_inbound_messages_client_id"), table_name="inbound_messages")
    op.drop_table("inbound_messages")
    op.drop_index(
        op.f("ix_communication_statuses_communication_id"), table_name="communication_statuses"
    )
    op.drop_table("communication_statuses")
    op.drop_index("ix_consent_records_client_id_at", table_name="consent_records")
    op.drop_index("ix_consent_records_address", table_name="consent_records")
    op.drop_table("consent_records")
    op.drop_index(op.f("ix_communications_status"), table_name="communications")
    op.drop_index(op.f("ix_communications_practice_id"), table_name="communications")
    op.drop_index(op.f("ix_communications_company_id"), table_name="communications")
    op.drop_index("ix_communications_client_id_created_at", table_name="communications")
    op.drop_index("ix_communications_channel_provider_id", table_name="communications")
    op.drop_index("ix_communications_address", table_name="communications")
    op.drop_table("communications")
    op.drop_table("address_suppressions")
