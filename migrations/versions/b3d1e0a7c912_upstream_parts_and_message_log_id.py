"""upstream parts (SMSC ids of sent parts) and message_log.message_id index

Revision ID: b3d1e0a7c912
Revises: d5795e900307
Create Date: 2026-12-01 23:40:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = 'b3d1e0a7c912'
down_revision = 'd5795e900307'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('upstream_parts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('smsc_id', sa.String(length=72), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('part', sa.Integer(), nullable=False),
    sa.Column('parts', sa.Integer(), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=True),
    sa.Column('stat', sa.String(length=8), nullable=True),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_upstream_parts'))
    )
    with op.batch_alter_table('upstream_parts', schema=None) as batch_op:
        batch_op.create_index('ix_upstream_parts_message', ['message_id', 'part'], unique=False)
        batch_op.create_index('ix_upstream_parts_smsc_id', ['smsc_id'], unique=False)
    with op.batch_alter_table('message_log', schema=None) as batch_op:
        batch_op.create_index('ix_message_log_message_id', ['message_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('message_log', schema=None) as batch_op:
        batch_op.drop_index('ix_message_log_message_id')
    with op.batch_alter_table('upstream_parts', schema=None) as batch_op:
        batch_op.drop_index('ix_upstream_parts_smsc_id')
        batch_op.drop_index('ix_upstream_parts_message')
    op.drop_table('upstream_parts')
