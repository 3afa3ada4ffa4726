"""ops hardening: customer.needs_recompute (imports converge after a crash) and the shared
WeChat access token (wechat_token)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 15:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.add_column(sa.Column('needs_recompute', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.create_index(batch_op.f('ix_customer_needs_recompute'), ['needs_recompute'],
                              unique=False)

    op.create_table('wechat_token',
    sa.Column('appid', sa.String(length=64), nullable=False),
    sa.Column('access_token', sa.String(length=512), nullable=True),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('forced_at', sa.Float(), nullable=False),
    sa.Column('forced_day', sa.String(length=10), nullable=False),
    sa.Column('forced_count', sa.Integer(), nullable=False),
    sa.Column('lock_until', sa.Float(), nullable=False),
    sa.Column('lock_owner', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('appid')
    )


def downgrade() -> None:
    op.drop_table('wechat_token')
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customer_needs_recompute'))
        batch_op.drop_column('needs_recompute')
