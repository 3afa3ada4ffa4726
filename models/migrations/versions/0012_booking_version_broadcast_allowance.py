"""bookings carry an optimistic version and a staff cancellation's reason; broadcasts count per tier and month in a locked row

Revision ID: 0012
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa


revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("booking") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("cancel_reason", sa.String(length=200), nullable=True))
    op.create_table(
        "broadcast_allowance",
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("tier", "month"),
    )
    # The broadcasts already made this month count.
    op.execute("INSERT INTO broadcast_allowance (tier, month, used) "
               "SELECT tier, month, COUNT(*) FROM broadcast GROUP BY tier, month")


def downgrade() -> None:
    op.drop_table("broadcast_allowance")
    with op.batch_alter_table("booking") as batch:
        batch.drop_column("cancel_reason")
        batch.drop_column("version")
