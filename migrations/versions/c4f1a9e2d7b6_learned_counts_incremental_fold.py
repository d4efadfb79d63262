"""learned_counts (hourly evidence) and learning_control.folded_until: the learning fold is incremental

Revision ID: c4f1a9e2d7b6
Revises: b3d1e0a7c912
Create Date: 2026-12-02 06:20:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = 'c4f1a9e2d7b6'
down_revision = 'b3d1e0a7c912'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('learned_counts',
    sa.Column('bucket', sa.Integer(), nullable=False),
    sa.Column('offer_code', sa.String(length=16), nullable=False),
    sa.Column('segment', sa.String(length=40), nullable=False),
    sa.Column('exposures', sa.Integer(), nullable=False),
    sa.Column('conversions', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('bucket', 'offer_code', 'segment', name=op.f('pk_learned_counts'))
    )
    with op.batch_alter_table('learning_control', schema=None) as batch_op:
        batch_op.add_column(sa.Column('folded_until', sa.Float(), server_default='0', nullable=False))
    # the first fold after the upgrade counts the window once from the events, then only what is new
    op.execute("DELETE FROM learned_arms")


def downgrade() -> None:
    with op.batch_alter_table('learning_control', schema=None) as batch_op:
        batch_op.drop_column('folded_until')
    op.drop_table('learned_counts')
