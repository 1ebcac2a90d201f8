"""Clients: search keys and new PIMS fields on clients; alert settings, reminder steps,
surveys and the loyalty ledger.

Revision ID: 0301_clients
Revises: 0003_pims
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from hub.db.types import UTCDateTime

revision = "0301_clients"
down_revision = "0003_pims"
branch_labels = ("clients",)
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
KEY = sa.String(length=200).with_variant(sa.String(length=200, collation="C"), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("email_status", sa.String(length=16), nullable=False,
                                   server_default="unverified"))
        batch.add_column(sa.Column("pet_app_status", sa.String(length=16), nullable=False,
                                   server_default="unregistered"))
        batch.add_column(sa.Column("name_key", KEY, nullable=True))
        batch.add_column(sa.Column("surname_key", KEY, nullable=True))
        batch.add_column(sa.Column("email_key", sa.String(length=320), nullable=True))
    for name, column in (("name_key", "name_key"), ("surname_key", "surname_key"),
                         ("email_key", "email_key"), ("phone_mobile", "phone_mobile"),
                         ("phone_home", "phone_home"), ("phone_work", "phone_work")):
        op.create_index(f"ix_clients_practice_{name}", "clients", ["practice_id", column])
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("name_key", KEY, nullable=True))
    op.create_index("ix_patients_practice_name_key", "patients", ["practice_id", "name_key"])
    op.create_index("ix_visits_practice_client", "visits", ["practice_id", "client_external_id"])
    op.create_index("ix_visits_practice_visited_at", "visits", ["practice_id", "visited_at"])

    op.create_table(
        "client_alert_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("all_disabled", sa.Boolean(), nullable=False),
        sa.Column("disabled", JSON, nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["practice_id"], ["practices.id"],
                                name=op.f("fk_client_alert_settings_practice_id_practices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_alert_settings")),
        sa.UniqueConstraint("client_id", name=op.f("uq_client_alert_settings_client_id")),
    )
    op.create_index(op.f("ix_client_alert_settings_practice_id"), "client_alert_settings",
                    ["practice_id"])
    op.create_table(
        "reminder_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("reminder_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=True),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("on_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason_code", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("communication_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["practice_id"], ["practices.id"],
                                name=op.f("fk_reminder_steps_practice_id_practices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminder_steps")),
        sa.UniqueConstraint("reminder_id", "step", name=op.f("uq_reminder_steps_reminder_id_step")),
    )
    op.create_index("ix_reminder_steps_practice_on", "reminder_steps", ["practice_id", "on_date"])
    op.create_index("ix_reminder_steps_client", "reminder_steps", ["client_id"])
    op.create_table(
        "survey_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("visit_external_id", sa.String(length=64), nullable=False),
        sa.Column("visited_at", UTCDateTime(), nullable=True),
        sa.Column("communication_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("answered_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["practice_id"], ["practices.id"],
                                name=op.f("fk_survey_requests_practice_id_practices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_requests")),
        sa.UniqueConstraint("practice_id", "visit_external_id",
                            name=op.f("uq_survey_requests_practice_id_visit_external_id")),
    )
    op.create_index("ix_survey_requests_client_answered", "survey_requests",
                    ["client_id", "answered_at"])
    op.create_table(
        "loyalty_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("balance", sa.Integer(), nullable=False),
        sa.Column("enrolled_by", sa.String(length=200), nullable=True),
        sa.Column("enrolled_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["practice_id"], ["practices.id"],
                                name=op.f("fk_loyalty_accounts_practice_id_practices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_accounts")),
        sa.UniqueConstraint("client_id", name=op.f("uq_loyalty_accounts_client_id")),
    )
    op.create_index(op.f("ix_loyalty_accounts_practice_id"), "loyalty_accounts", ["practice_id"])
    op.create_table(
        "loyalty_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("coins", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reward", sa.String(length=200), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("detail", JSON, nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["loyalty_accounts.id"],
                                name=op.f("fk_loyalty_entries_account_id_loyalty_accounts")),
        sa.ForeignKeyConstraint(["practice_id"], ["practices.id"],
                                name=op.f("fk_loyalty_entries_practice_id_practices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_entries")),
    )
    op.create_index(op.f("ix_loyalty_entries_account_id"), "loyalty_entries", ["account_id"])
    op.create_index("ix_loyalty_entries_client_at", "loyalty_entries", ["client_id", "at"])


def downgrade() -> None:
    for table in ("loyalty_entries", "loyalty_accounts", "survey_requests", "reminder_steps",
                  "client_alert_settings"):
        op.drop_table(table)
    op.drop_index("ix_patients_practice_name_key", table_name="patients")
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("name_key")
    op.drop_index("ix_visits_practice_visited_at", table_name="visits")
    op.drop_index("ix_visits_practice_client", table_name="visits")
    for name in ("name_key", "surname_key", "email_key", "phone_mobile", "phone_home",
                 "phone_work"):
        op.drop_index(f"ix_clients_practice_{name}", table_name="clients")
    with op.batch_alter_table("clients") as batch:
        for column in ("email_key", "surname_key", "name_key", "pet_app_status", "email_status"):
            batch.drop_column(column)
