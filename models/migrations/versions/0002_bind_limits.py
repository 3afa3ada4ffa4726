"""binding rate limits per customer and per phone

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bind_limit',
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('window_start', sa.Float(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('fsm_state', schema=None) as batch_op:
        batch_op.create_index('ix_fsm_state_updated_at', ['updated_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('fsm_state', schema=None) as batch_op:
        batch_op.drop_index('ix_fsm_state_updated_at')
    op.drop_table('bind_limit')
