"""demo only: the WeChat API double's state, shared by workers, the CLI and restarts;
the count of customer-service messages in each user's 48-hour window

Revision ID: 0013
Revises: 0014
"""
from alembic import op
import sqlalchemy as sa


revision = "0013"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wechat_double_state",
        sa.Column("appid", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("appid"),
    )
    with op.batch_alter_table("wechat_user") as batch:
        batch.add_column(sa.Column("cs_window_from", sa.Float(), nullable=True))
        batch.add_column(sa.Column("cs_used", sa.Integer(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("wechat_user") as batch:
        batch.drop_column("cs_used")
        batch.drop_column("cs_window_from")
    op.drop_table("wechat_double_state")
