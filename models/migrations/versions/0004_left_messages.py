"""messages customers leave for a human agent

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "left_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("openid", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("closed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("closed_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("reply", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_left_message_openid", "left_message", ["openid"])
    op.create_index("ix_left_message_open", "left_message", ["closed_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_left_message_open", table_name="left_message")
    op.drop_index("ix_left_message_openid", table_name="left_message")
    op.drop_table("left_message")
