"""Window results keep the intervals of their label-free estimates.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

``intervals`` maps an estimated metric to ``[low, high]`` at ``interval_level``; the HTML
report draws them as the estimate's band. Rows stored before this revision get ``{}`` and no
level: their intervals were not kept, and "none recorded" is what the history can say of them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("window_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("intervals", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column("interval_level", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("window_results", schema=None) as batch_op:
        batch_op.drop_column("interval_level")
        batch_op.drop_column("intervals")
