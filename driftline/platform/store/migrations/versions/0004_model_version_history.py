"""The model version history: lineage per version, and what trainers did with requests.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

``model_versions.lineage`` holds the registry reference of a version (from version 2
retraining requests, or from following a registry alias); versions stored before hold null.
``retraining_acknowledgements`` records that a trainer handled a request (the trainer helper
writes it after its handler returns), once per request and consumer group.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lineage", sa.JSON(), nullable=True))
    op.create_table(
        "retraining_acknowledgements",
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("consumer", sa.String(length=255), nullable=False),
        sa.Column("acknowledged_ms", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key", "consumer", name=op.f("pk_retraining_acknowledgements")),
    )


def downgrade() -> None:
    op.drop_table("retraining_acknowledgements")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("lineage")
