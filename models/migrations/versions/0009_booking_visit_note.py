"""bookings keep a visit note: the symptoms or the doctor's referral (特种检查)

Revision ID: 0009
Revises: 0015
"""
from alembic import op
import sqlalchemy as sa


revision = "0009"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("booking") as batch:
        batch.add_column(sa.Column("visit_note", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("booking") as batch:
        batch.drop_column("visit_note")
