"""Cases end to end: urgency, patient, delivery, turnaround, attachments, reports, actors.

Revision ID: 0401_cases
Revises: 0002_imaging
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from hub.db.types import UTCDateTime

revision = "0401_cases"
down_revision = "0002_imaging"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("urgency", sa.String(length=16), nullable=False, server_default="routine"))
        batch.add_column(sa.Column("delivery", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("second_opinion", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("patient", JSON, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("pims_patient_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("failure_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reported_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("due_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("overdue_at", UTCDateTime(), nullable=True))
        batch.create_index(batch.f("ix_cases_due_at"), ["due_at"], unique=False)
    with op.batch_alter_table("cases") as batch:
        batch.alter_column("urgency", server_default=None)
        batch.alter_column("second_opinion", server_default=None)
        batch.alter_column("patient", server_default=None)
    with op.batch_alter_table("case_status_history") as batch:
        batch.add_column(sa.Column("actor", sa.String(length=200), nullable=True))
    op.execute("UPDATE cases SET status = 'routed' WHERE status = 'forwarding'")
    op.create_table(
        "case_attachments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_case_attachments_case_id_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_attachments")),
    )
    op.create_index(op.f("ix_case_attachments_case_id"), "case_attachments", ["case_id"], unique=False)
    op.create_table(
        "case_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("addendum_to_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("radiologist", sa.String(length=200), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("shareable", sa.Boolean(), nullable=False),
        sa.Column("shared_by", sa.String(length=200), nullable=True),
        sa.Column("shared_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["addendum_to_id"], ["case_reports.id"],
                                name=op.f("fk_case_reports_addendum_to_id_case_reports")),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_case_reports_case_id_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_reports")),
    )
    op.create_index(op.f("ix_case_reports_case_id"), "case_reports", ["case_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_case_reports_case_id"), table_name="case_reports")
    op.drop_table("case_reports")
    op.drop_index(op.f("ix_case_attachments_case_id"), table_name="case_attachments")
    op.drop_table("case_attachments")
    with op.batch_alter_table("case_status_history") as batch:
        batch.drop_column("actor")
    with op.batch_alter_table("cases") as batch:
        batch.drop_index(batch.f("ix_cases_due_at"))
        for name in ("overdue_at", "due_at", "reported_at", "failure_reason", "pims_patient_id",
                     "patient", "second_opinion", "delivery", "urgency"):
            batch.drop_column(name)
