"""delivery replay: what triggered each attempt, and a retry asked for on a delivery

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 04:00:00.000000

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
    # Every attempt made so far was the hub's own schedule.
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("trigger", sa.String(length=16), server_default="scheduled", nullable=False)
        )
    with op.batch_alter_table("agent_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retry_trigger", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agent_deliveries", schema=None) as batch_op:
        batch_op.drop_column("retry_trigger")
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_column("trigger")
