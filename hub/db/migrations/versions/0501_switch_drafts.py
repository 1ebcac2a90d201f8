"""Accounts: draft switch requests (read from a practice's email, confirmed by an operator).

A draft may not know the account or either company yet, so those columns take NULL; every
state but ``draft``/``discarded`` still has them (hub/accounts/switching.py fills them in when
the draft is confirmed). ``statement_ref`` points at where the written statement is kept.

Revision ID: 0501_switch_drafts
Revises: 0005_accounts
"""

import sqlalchemy as sa
from alembic import op

revision = "0501_switch_drafts"
down_revision = "0005_accounts"
branch_labels = None
depends_on = None

_MAYBE_UNKNOWN = ("account_id", "current_company_id", "new_company_id")


def upgrade() -> None:
    # batch: SQLite cannot ALTER a column's nullability in place, so the table is copied
    with op.batch_alter_table("switch_requests") as batch:
        for column in _MAYBE_UNKNOWN:
            batch.alter_column(column, existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("statement_ref", sa.String(length=100), nullable=True))


def downgrade() -> None:
    # drafts have no place in the older schema
    op.execute("DELETE FROM switch_steps WHERE switch_request_id IN "
               "(SELECT id FROM switch_requests WHERE state IN ('draft', 'discarded'))")
    op.execute("DELETE FROM switch_requests WHERE state IN ('draft', 'discarded')")
    with op.batch_alter_table("switch_requests") as batch:
        batch.drop_column("statement_ref")
        for column in _MAYBE_UNKNOWN:
            batch.alter_column(column, existing_type=sa.Integer(), nullable=False)
