"""visualization kappa and probability

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 17:13:14.034695
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table('visualizations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kappa', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('probability', sa.Float(), nullable=True))




def downgrade() -> None:

    with op.batch_alter_table('visualizations', schema=None) as batch_op:
        batch_op.drop_column('probability')
        batch_op.drop_column('kappa')


