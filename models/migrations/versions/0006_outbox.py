"""outbox: the notification table becomes the outbox of every message to customers

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 09:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.add_column(sa.Column('booking_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('channel', S(length=16), nullable=False,
                                      server_default='wechat'))
        batch_op.add_column(sa.Column('recipient', S(length=64), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('tries', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('next_attempt_at', sa.Float(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('lease_until', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('expires_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('last_error', S(length=256), nullable=True))
        batch_op.add_column(sa.Column('client_msg_id', S(length=64), nullable=True))
        batch_op.add_column(sa.Column('msgid', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('delivery', S(length=64), nullable=True))
        batch_op.create_index('ix_notification_booking_id', ['booking_id'], unique=False)
        batch_op.create_index('ix_notification_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_notification_recipient', ['recipient', 'status'], unique=False)
        batch_op.create_index('ix_notification_msgid', ['msgid'], unique=False)
    # Tier-change notices queued before the outbox existed were never sent: they are stale.
    op.execute("UPDATE notification SET status = 'expired', last_error = 'queued before the "
               "outbox existed' WHERE status = 'pending'")


def downgrade() -> None:
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_msgid')
        batch_op.drop_index('ix_notification_recipient')
        batch_op.drop_index('ix_notification_due')
        batch_op.drop_index('ix_notification_booking_id')
        for col in ('delivery', 'msgid', 'client_msg_id', 'last_error', 'expires_at',
                    'lease_until', 'next_attempt_at', 'tries', 'recipient', 'channel',
                    'booking_id'):
            batch_op.drop_column(col)
