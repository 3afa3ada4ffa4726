"""family members added in chat are marked (erased on unbind when no booking uses them)

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("family_member") as batch:
        batch.add_column(sa.Column("added_in_chat", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("family_member") as batch:
        batch.drop_column("added_in_chat")
