"""Imaging tables: studies, instances, cases, case status history, per-instance forward results.

Revision ID: 0002_imaging
Revises: 0001_core
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from hub.db.types import UTCDateTime

revision = "0002_imaging"
down_revision = "0001_core"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("calling_ae", sa.String(length=16), nullable=True),
        sa.Column("modalities", JSON, nullable=False),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("first_received_at", UTCDateTime(), nullable=False),
        sa.Column("last_received_at", UTCDateTime(), nullable=False),
        sa.Column("stable_check_at", UTCDateTime(), nullable=True),
        sa.Column("stable_at", UTCDateTime(), nullable=True),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("animal_name", sa.String(length=200), nullable=True),
        sa.Column("animal_id", sa.String(length=64), nullable=True),
        sa.Column("species", sa.String(length=64), nullable=True),
        sa.Column("responsible_person", sa.String(length=200), nullable=True),
        sa.Column("body_part", sa.String(length=64), nullable=True),
        sa.Column("study_date", sa.String(length=8), nullable=True),
        sa.Column("study_description", sa.String(length=200), nullable=True),
        sa.Column("institution", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_studies_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint(
            "practice_id",
            "study_instance_uid",
            name=op.f("uq_studies_practice_id_study_instance_uid"),
        ),
    )
    op.create_index(op.f("ix_studies_practice_id"), "studies", ["practice_id"], unique=False)
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("company_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("clinical_history", sa.Text(), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("submitted_by", sa.String(length=200), nullable=False),
        sa.Column("auto_submitted", sa.Boolean(), nullable=False),
        sa.Column("route_reason", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_cases_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_cases_company_id_companies")
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_cases_practice_id_practices")
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_cases_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
    )
    op.create_index("ix_cases_company_id_status", "cases", ["company_id", "status"], unique=False)
    op.create_index(op.f("ix_cases_practice_id"), "cases", ["practice_id"], unique=False)
    op.create_index(op.f("ix_cases_study_id"), "cases", ["study_id"], unique=False)
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("calling_ae", sa.String(length=16), nullable=False),
        sa.Column("peer_address", sa.String(length=64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(length=300), nullable=False),
        sa.Column("received_count", sa.Integer(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("animal_name", sa.String(length=200), nullable=True),
        sa.Column("animal_id", sa.String(length=64), nullable=True),
        sa.Column("species", sa.String(length=64), nullable=True),
        sa.Column("responsible_person", sa.String(length=200), nullable=True),
        sa.Column("body_part", sa.String(length=64), nullable=True),
        sa.Column("study_date", sa.String(length=8), nullable=True),
        sa.Column("study_description", sa.String(length=200), nullable=True),
        sa.Column("institution", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_instances_practice_id_practices")
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_instances_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_instances_sop_instance_uid")),
    )
    op.create_index(op.f("ix_instances_practice_id"), "instances", ["practice_id"], unique=False)
    op.create_index(op.f("ix_instances_study_id"), "instances", ["study_id"], unique=False)
    op.create_table(
        "case_instance_forwards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_instance_forwards_case_id_cases")
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_case_instance_forwards_instance_id_instances"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_instance_forwards")),
        sa.UniqueConstraint(
            "case_id", "instance_id", name=op.f("uq_case_instance_forwards_case_id_instance_id")
        ),
    )
    op.create_index(
        op.f("ix_case_instance_forwards_case_id"),
        "case_instance_forwards",
        ["case_id"],
        unique=False,
    )
    op.create_table(
        "case_status_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("data", JSON, nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_status_history_case_id_cases")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_status_history")),
    )
    op.create_index(
        op.f("ix_case_status_history_case_id"), "case_status_history", ["case_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_case_status_history_case_id"), table_name="case_status_history")
    op.drop_table("case_status_history")
    op.drop_index(op.f("ix_case_instance_forwards_case_id"), table_name="case_instance_forwards")
    op.drop_table("case_instance_forwards")
    op.drop_index(op.f("ix_instances_study_id"), table_name="instances")
    op.drop_index(op.f("ix_instances_practice_id"), table_name="instances")
    op.drop_table("instances")
    op.drop_index(op.f("ix_cases_study_id"), table_name="cases")
    op.drop_index(op.f("ix_cases_practice_id"), table_name="cases")
    op.drop_index("ix_cases_company_id_status", table_name="cases")
    op.drop_table("cases")
    op.drop_index(op.f("ix_studies_practice_id"), table_name="studies")
    op.drop_table("studies")
