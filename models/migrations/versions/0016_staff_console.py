"""staff sign-in names, console sessions and one-time sign-in links (the web console, /admin)

Revision ID: 0016
Revises: 0012
"""
from alembic import op
import sqlalchemy as sa
from sqlmodel.sql.sqltypes import UTCDateTime


revision = "0016"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("staff") as batch:
        batch.add_column(sa.Column("login", sa.String(length=64), nullable=True))
        batch.create_unique_constraint("uq_staff_login", ["login"])
    op.create_table(
        "staff_session",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("staff_openid", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_staff_session_staff_openid", "staff_session", ["staff_openid"])
    op.create_table(
        "staff_signin_link",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("staff_openid", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )


def downgrade() -> None:
    op.drop_table("staff_signin_link")
    op.drop_index("ix_staff_session_staff_openid", table_name="staff_session")
    op.drop_table("staff_session")
    with op.batch_alter_table("staff") as batch:
        batch.drop_constraint("uq_staff_login", type_="unique")
        batch.drop_column("login")
