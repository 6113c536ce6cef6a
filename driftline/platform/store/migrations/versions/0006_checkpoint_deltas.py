"""Checkpoints become chains: a whole-state base plus the deltas written since.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

``stream_checkpoints`` keeps one partition's whole state (the base) and gains ``chain``, a
random id each base write draws; ``stream_checkpoint_deltas`` holds what changed after it, one
row per checkpoint, in ``seq`` order. A worker writes a delta only onto the chain it wrote or
restored, so rows from two writers never mix. Rows stored before this revision are bases
with no chain and no deltas: they restore as they did.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stream_checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chain", sa.String(length=32), nullable=True))
    op.create_table(
        "stream_checkpoint_deltas",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("chain", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("offsets", sa.JSON(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "seq", name=op.f("pk_stream_checkpoint_deltas")),
    )


def downgrade() -> None:
    # a base without its deltas is an older state than the offsets committed after them, and
    # restoring it would skip what the deltas held: refuse rather than drop them silently
    pending = op.get_bind().execute(sa.text("SELECT count(*) FROM stream_checkpoint_deltas")).scalar()
    if pending:
        raise RuntimeError(
            f"stream_checkpoint_deltas holds {pending} checkpoint delta(s) that revision 0005 cannot "
            "represent: stop the workers and delete the checkpoints (the partitions then start "
            "from empty state), or stay at 0006"
        )
    op.drop_table("stream_checkpoint_deltas")
    with op.batch_alter_table("stream_checkpoints", schema=None) as batch_op:
        batch_op.drop_column("chain")
