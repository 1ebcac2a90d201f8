"""Accounts domain: account requests (onboarding stages), password-set tokens, account history,
switch requests and their steps.

Revision ID: 0005_accounts
Revises: 0004_messaging
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from hub.db.types import UTCDateTime

revision = "0005_accounts"
down_revision = "0004_messaging"
branch_labels = None
# The contract named depends_on "0002_imaging", but these tables reference only core tables, and
# with depends_on the database's heads ({0003_pims, 0005_accounts}) differ from the script's
# heads ({0002_imaging, 0003_pims, 0005_accounts}) so hub.db.migrate.ensure_current refuses to
# start. Without it the three are plain heads and "upgrade heads" applies them all.
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=True),
        sa.Column("practice_name", sa.String(length=200), nullable=True),
        sa.Column("contact_name", sa.String(length=200), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=40), nullable=True),
        sa.Column(
            "address",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("pims", sa.String(length=100), nullable=True),
        sa.Column("imaging_software", sa.String(length=100), nullable=True),
        sa.Column(
            "modalities",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "extra",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column(
            "missing_fields",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("completion_token_hash", sa.String(length=64), nullable=True),
        sa.Column("practice_id", sa.Integer(), nullable=True),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("information_requested_at", UTCDateTime(), nullable=True),
        sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
        sa.Column("account_created_at", UTCDateTime(), nullable=True),
        sa.Column("welcome_sent_at", UTCDateTime(), nullable=True),
        sa.Column("password_set_at", UTCDateTime(), nullable=True),
        sa.Column("first_images_received_at", UTCDateTime(), nullable=True),
        sa.Column("first_case_submitted_at", UTCDateTime(), nullable=True),
        sa.Column("rejected_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_account_requests_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_account_requests_company_id_companies")
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"],
            ["practices.id"],
            name=op.f("fk_account_requests_practice_id_practices"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_account_requests_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_requests")),
        sa.UniqueConstraint(
            "completion_token_hash", name=op.f("uq_account_requests_completion_token_hash")
        ),
    )
    op.create_index(
        op.f("ix_account_requests_account_id"), "account_requests", ["account_id"], unique=False
    )
    op.create_index(
        "ix_account_requests_company_id_requested_at",
        "account_requests",
        ["company_id", "requested_at"],
        unique=False,
    )
    op.create_table(
        "password_set_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_password_set_tokens_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_set_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_password_set_tokens_token_hash")),
    )
    op.create_index(
        op.f("ix_password_set_tokens_user_id"), "password_set_tokens", ["user_id"], unique=False
    )
    op.create_table(
        "switch_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("current_company_id", sa.Integer(), nullable=False),
        sa.Column("new_company_id", sa.Integer(), nullable=False),
        sa.Column(
            "modalities",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("requester_name", sa.String(length=200), nullable=False),
        sa.Column("requester_email", sa.String(length=320), nullable=True),
        sa.Column("requester_authorised", sa.Boolean(), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("entered_by", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("outcome", sa.String(length=40), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("last_case_at", UTCDateTime(), nullable=True),
        sa.Column("notified_at", UTCDateTime(), nullable=True),
        sa.Column("deadline_at", UTCDateTime(), nullable=True),
        sa.Column("response", sa.String(length=8), nullable=False),
        sa.Column("responded_at", UTCDateTime(), nullable=True),
        sa.Column("response_note", sa.Text(), nullable=True),
        sa.Column("operator_decision", sa.String(length=8), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("new_account_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_switch_requests_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["current_company_id"],
            ["companies.id"],
            name=op.f("fk_switch_requests_current_company_id_companies"),
        ),
        sa.ForeignKeyConstraint(
            ["new_account_id"],
            ["accounts.id"],
            name=op.f("fk_switch_requests_new_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["new_company_id"],
            ["companies.id"],
            name=op.f("fk_switch_requests_new_company_id_companies"),
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_switch_requests_practice_id_practices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_switch_requests")),
    )
    op.create_index(
        op.f("ix_switch_requests_current_company_id"),
        "switch_requests",
        ["current_company_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_switch_requests_new_company_id"),
        "switch_requests",
        ["new_company_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_switch_requests_practice_id"), "switch_requests", ["practice_id"], unique=False
    )
    op.create_table(
        "account_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.Integer(), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("change", sa.String(length=40), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("switch_request_id", sa.Integer(), nullable=True),
        sa.Column(
            "before",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "after",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_account_history_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name=op.f("fk_account_history_company_id_companies")
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_account_history_practice_id_practices")
        ),
        sa.ForeignKeyConstraint(
            ["switch_request_id"],
            ["switch_requests.id"],
            name=op.f("fk_account_history_switch_request_id_switch_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_history")),
    )
    op.create_index(
        op.f("ix_account_history_account_id"), "account_history", ["account_id"], unique=False
    )
    op.create_index(
        op.f("ix_account_history_practice_id"), "account_history", ["practice_id"], unique=False
    )
    op.create_table(
        "switch_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("switch_request_id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("step", sa.String(length=40), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.String(length=40), nullable=True),
        sa.Column(
            "detail",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["switch_request_id"],
            ["switch_requests.id"],
            name=op.f("fk_switch_steps_switch_request_id_switch_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_switch_steps")),
    )
    op.create_index(
        op.f("ix_switch_steps_switch_request_id"),
        "switch_steps",
        ["switch_request_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_switch_steps_switch_request_id"), table_name="switch_steps")
    op.drop_table("switch_steps")
    op.drop_index(op.f("ix_account_history_practice_id"), table_name="account_history")
    op.drop_index(op.f("ix_account_history_account_id"), table_name="account_history")
    op.drop_table("account_history")
    op.drop_index(op.f("ix_switch_requests_practice_id"), table_name="switch_requests")
    op.drop_index(op.f("ix_switch_requests_new_company_id"), table_name="switch_requests")
    op.drop_index(op.f("ix_switch_requests_current_company_id"), table_name="switch_requests")
    op.drop_table("switch_requests")
    op.drop_index(op.f("ix_password_set_tokens_user_id"), table_name="password_set_tokens")
    op.drop_table("password_set_tokens")
    op.drop_index("ix_account_requests_company_id_requested_at", table_name="account_requests")
    op.drop_index(op.f("ix_account_requests_account_id"), table_name="account_requests")
    op.drop_table("account_requests")
