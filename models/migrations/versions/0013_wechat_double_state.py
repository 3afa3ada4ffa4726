"""demo only: the WeChat API double's state, shared by workers, the CLI and restarts

Revision ID: 0013
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa


revision = "0013"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wechat_double_state",
        sa.Column("appid", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("appid"),
    )


def downgrade() -> None:
    op.drop_table("wechat_double_state")
