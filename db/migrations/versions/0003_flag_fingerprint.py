"""flag fingerprint: a finding's identity across re-audits and releases

Revision ID: 0003_flag_fingerprint
Revises: 0002
Create Date: 2026-11-27 10:00:00

Adds ``flags.fingerprint`` (indexed) and fills it for the flags already stored, from each flag's class pair,
code, stream and the class it is about (``detail.class_name``), with the same function the workers use.
"""
from __future__ import annotations

import hashlib
import json

from alembic import op
import sqlalchemy as sa


revision = '0003_flag_fingerprint'
down_revision = '0002'
branch_labels = None
depends_on = None


def _fingerprint(a: str, b: str, code: str, stream: str | None, class_name: str | None) -> str:
    # a frozen copy of workers.audit.flags.flag_fingerprint (v1): a migration must not change when that module does
    key = ["v1", sorted((a, b)), code, stream or "", class_name or ""]
    return hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()[:32]


def upgrade() -> None:
    with op.batch_alter_table('flags', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fingerprint', sa.String(length=64), server_default='', nullable=False))
        batch_op.create_index(batch_op.f('ix_flags_fingerprint'), ['fingerprint'], unique=False)

    flags = sa.table('flags', sa.column('id', sa.Integer), sa.column('pair_id', sa.Integer),
                     sa.column('code', sa.String), sa.column('stream', sa.String), sa.column('detail', sa.JSON),
                     sa.column('fingerprint', sa.String))
    pairs = sa.table('class_pairs', sa.column('id', sa.Integer), sa.column('class_a', sa.String),
                     sa.column('class_b', sa.String))
    conn = op.get_bind()
    rows = conn.execute(sa.select(flags.c.id, flags.c.code, flags.c.stream, flags.c.detail, pairs.c.class_a,
                                  pairs.c.class_b).join(pairs, pairs.c.id == flags.c.pair_id)).all()
    for row in rows:
        detail = row.detail if isinstance(row.detail, dict) else json.loads(row.detail or "{}")
        value = _fingerprint(row.class_a, row.class_b, row.code, row.stream, detail.get("class_name"))
        conn.execute(flags.update().where(flags.c.id == row.id).values(fingerprint=value))


def downgrade() -> None:
    with op.batch_alter_table('flags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_flags_fingerprint'))
        batch_op.drop_column('fingerprint')
