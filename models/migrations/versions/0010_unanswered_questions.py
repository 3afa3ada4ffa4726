"""questions the FAQ could not answer, kept without the identity for staff to grow the FAQ

Revision ID: 0010
Revises: 0015
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0010"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unanswered_question",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("tier", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("asked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_unanswered_question_asked_at", "unanswered_question", ["asked_at"])


def downgrade() -> None:
    op.drop_index("ix_unanswered_question_asked_at", table_name="unanswered_question")
    op.drop_table("unanswered_question")
