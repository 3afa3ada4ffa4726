"""policy counting windows (policy.counts_from, counts_until, indexed) and the daily tier job's
progress (tier_run), so the daily job evaluates only the customers with an event

The windows are left NULL here (they depend on rules.toml); the first daily tier run after the
upgrade fills them and evaluates everyone.

Revision ID: 0015
Revises: 0014
"""
from alembic import op
import sqlalchemy as sa


revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("policy") as batch:
        batch.add_column(sa.Column("counts_from", sa.Date(), nullable=True))
        batch.add_column(sa.Column("counts_until", sa.Date(), nullable=True))
        batch.create_index("ix_policy_counts_from", ["counts_from"], unique=False)
        batch.create_index("ix_policy_counts_until", ["counts_until"], unique=False)
    op.create_table(
        "tier_run",
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("evaluated_on", sa.Date(), nullable=False),
        sa.Column("rules_digest", sa.String(length=64), nullable=False),
        sa.Column("window_digest", sa.String(length=64), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("tier_run")
    with op.batch_alter_table("policy") as batch:
        batch.drop_index("ix_policy_counts_until")
        batch.drop_index("ix_policy_counts_from")
        batch.drop_column("counts_until")
        batch.drop_column("counts_from")
