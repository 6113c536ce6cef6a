"""Window results keep the ranking of segments behind the whole model's change.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

``segments_ranked`` holds a final whole-model window's ``SegmentContribution`` list, worst
first (``detectors/segments.py``), so ``driftline status`` and the HTML report show the same
segments the alert and the replay report named. Rows stored before this revision get ``[]``:
their ranking was not kept, and "none recorded" is what the history can say of them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("window_results", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("segments_ranked", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )


def downgrade() -> None:
    with op.batch_alter_table("window_results", schema=None) as batch_op:
        batch_op.drop_column("segments_ranked")
