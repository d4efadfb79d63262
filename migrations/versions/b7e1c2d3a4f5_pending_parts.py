"""pending long-MO parts, durable until the message is whole or expired

Revision ID: b7e1c2d3a4f5
Revises: f4c8b4e0f8cb
Create Date: 2026-12-01 23:40:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = 'b7e1c2d3a4f5'
down_revision = 'f4c8b4e0f8cb'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pending_parts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('channel', sa.String(length=80), nullable=False),
    sa.Column('sender', sa.String(length=65), nullable=False),
    sa.Column('recipient', sa.String(length=65), nullable=False),
    sa.Column('ref', sa.Integer(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('data_coding', sa.Integer(), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('registered', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pending_parts'))
    )
    with op.batch_alter_table('pending_parts', schema=None) as batch_op:
        batch_op.create_index('ix_pending_parts_message', ['channel', 'sender', 'recipient', 'ref', 'total'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('pending_parts', schema=None) as batch_op:
        batch_op.drop_index('ix_pending_parts_message')
    op.drop_table('pending_parts')
