"""year-end reminders of unused benefits: one per customer, service and year

Revision ID: 0017
Revises: 0016 (given as 0012; it follows 0016 on this branch, which holds h-console's 0016)
"""
from alembic import op
import sqlalchemy as sa
from sqlmodel.sql.sqltypes import UTCDateTime


revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "year_end_nudge",
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("staff_openid", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"]),
        sa.PrimaryKeyConstraint("customer_id", "service", "year"),
    )


def downgrade() -> None:
    op.drop_table("year_end_nudge")
