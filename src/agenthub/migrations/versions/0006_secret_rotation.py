"""secret rotation: an agent's previous webhook secret, still signing until its grace ends

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 05:00:00.000000

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
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("previous_webhook_secret_encrypted", sa.Text(), nullable=True)
        )
        batch_op.add_column(
            sa.Column("previous_webhook_secret_until", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("previous_webhook_secret_until")
        batch_op.drop_column("previous_webhook_secret_encrypted")
