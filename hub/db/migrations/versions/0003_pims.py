"""PIMS: clients, patients, reminders, appointments, visits; sync checkpoints, runs, rejects.

Revision ID: 0003_pims
Revises: 0001_core
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from hub.db.types import UTCDateTime

revision = "0003_pims"
down_revision = "0001_core"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "appointments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("patient_external_id", sa.String(length=64), nullable=True),
        sa.Column("client_external_id", sa.String(length=64), nullable=True),
        sa.Column("start_at", UTCDateTime(), nullable=True),
        sa.Column("type", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("modified_at", UTCDateTime(), nullable=True),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_appointments_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointments")),
        sa.UniqueConstraint(
            "practice_id", "external_id", name=op.f("uq_appointments_practice_id_external_id")
        ),
    )
    op.create_index(
        op.f("ix_appointments_practice_id"), "appointments", ["practice_id"], unique=False
    )
    op.create_index(
        "ix_appointments_practice_start", "appointments", ["practice_id", "start_at"], unique=False
    )
    op.create_table(
        "clients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("first_name", sa.String(length=200), nullable=True),
        sa.Column("last_name", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("client_class", sa.String(length=100), nullable=True),
        sa.Column("balance", sa.Numeric(precision=12, scale=2), nullable=True),
        sa.Column("comms_disabled", sa.Boolean(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone_home", sa.String(length=20), nullable=True),
        sa.Column("phone_work", sa.String(length=20), nullable=True),
        sa.Column("phone_mobile", sa.String(length=20), nullable=True),
        sa.Column("address_line1", sa.String(length=200), nullable=True),
        sa.Column("address_line2", sa.String(length=200), nullable=True),
        sa.Column("city", sa.String(length=100), nullable=True),
        sa.Column("region", sa.String(length=100), nullable=True),
        sa.Column("postcode", sa.String(length=20), nullable=True),
        sa.Column("country", sa.String(length=64), nullable=True),
        sa.Column("modified_at", UTCDateTime(), nullable=True),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_clients_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clients")),
        sa.UniqueConstraint(
            "practice_id", "external_id", name=op.f("uq_clients_practice_id_external_id")
        ),
    )
    op.create_index(op.f("ix_clients_practice_id"), "clients", ["practice_id"], unique=False)
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("client_external_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("species", sa.String(length=100), nullable=True),
        sa.Column("breed", sa.String(length=100), nullable=True),
        sa.Column("sex", sa.String(length=50), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("modified_at", UTCDateTime(), nullable=True),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_patients_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
        sa.UniqueConstraint(
            "practice_id", "external_id", name=op.f("uq_patients_practice_id_external_id")
        ),
    )
    op.create_index(
        "ix_patients_practice_client",
        "patients",
        ["practice_id", "client_external_id"],
        unique=False,
    )
    op.create_index(op.f("ix_patients_practice_id"), "patients", ["practice_id"], unique=False)
    op.create_table(
        "pims_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("connector", sa.String(length=100), nullable=False),
        sa.Column("checkpoint", JSON, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["practice_id"],
            ["practices.id"],
            name=op.f("fk_pims_checkpoints_practice_id_practices"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pims_checkpoints")),
        sa.UniqueConstraint(
            "practice_id", "connector", name=op.f("uq_pims_checkpoints_practice_id_connector")
        ),
    )
    op.create_table(
        "pims_sync_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("connector", sa.String(length=100), nullable=False),
        sa.Column("full", sa.Boolean(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("counts", JSON, nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_pims_sync_runs_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pims_sync_runs")),
    )
    op.create_index(
        "ix_pims_sync_runs_practice_connector",
        "pims_sync_runs",
        ["practice_id", "connector"],
        unique=False,
    )
    op.create_table(
        "reminders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("patient_external_id", sa.String(length=64), nullable=True),
        sa.Column("service", sa.String(length=200), nullable=True),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("modified_at", UTCDateTime(), nullable=True),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_reminders_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminders")),
        sa.UniqueConstraint(
            "practice_id", "external_id", name=op.f("uq_reminders_practice_id_external_id")
        ),
    )
    op.create_index(
        "ix_reminders_practice_due", "reminders", ["practice_id", "due_date"], unique=False
    )
    op.create_index(op.f("ix_reminders_practice_id"), "reminders", ["practice_id"], unique=False)
    op.create_index(
        "ix_reminders_practice_patient",
        "reminders",
        ["practice_id", "patient_external_id"],
        unique=False,
    )
    op.create_table(
        "visits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("patient_external_id", sa.String(length=64), nullable=True),
        sa.Column("client_external_id", sa.String(length=64), nullable=True),
        sa.Column("visited_at", UTCDateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("modified_at", UTCDateTime(), nullable=True),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_visits_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visits")),
        sa.UniqueConstraint(
            "practice_id", "external_id", name=op.f("uq_visits_practice_id_external_id")
        ),
    )
    op.create_index(op.f("ix_visits_practice_id"), "visits", ["practice_id"], unique=False)
    op.create_table(
        "pims_rejects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("connector", sa.String(length=100), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=300), nullable=True),
        sa.Column("raw", JSON, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_pims_rejects_practice_id_practices")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["pims_sync_runs.id"], name=op.f("fk_pims_rejects_run_id_pims_sync_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pims_rejects")),
    )
    op.create_index(
        op.f("ix_pims_rejects_practice_id"), "pims_rejects", ["practice_id"], unique=False
    )
    op.create_index(op.f("ix_pims_rejects_run_id"), "pims_rejects", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_table("pims_rejects")
    op.drop_table("visits")
    op.drop_table("reminders")
    op.drop_table("pims_sync_runs")
    op.drop_table("pims_checkpoints")
    op.drop_table("patients")
    op.drop_table("clients")
    op.drop_table("appointments")
