"""quota_use is only the lock of a yearly quota: its `used` copy of the count is dropped (the
uses are counted from the bookings, under the row's lock)

Revision ID: 0014
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa


revision = "0014"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quota_use") as batch:
        batch.drop_column("used")


def downgrade() -> None:
    with op.batch_alter_table("quota_use") as batch:
        batch.add_column(sa.Column("used", sa.Integer(), nullable=False, server_default="0"))
    # the count the older code kept there: the bookings that use the year's quota
    op.execute("""
        UPDATE quota_use SET used = (
            SELECT count(*) FROM booking
            WHERE booking.customer_id = quota_use.customer_id
              AND booking.service = quota_use.service
              AND booking.quota_year = quota_use.year
              AND booking.counted)
    """)
