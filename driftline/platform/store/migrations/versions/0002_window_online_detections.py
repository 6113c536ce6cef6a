"""Window results keep their online detections (river detectors on the error sample).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Existing rows get an empty list: detections of windows stored before this revision were not
kept, and "none recorded" is what the history can honestly say of them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("window_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("online", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))


def downgrade() -> None:
    with op.batch_alter_table("window_results", schema=None) as batch_op:
        batch_op.drop_column("online")
