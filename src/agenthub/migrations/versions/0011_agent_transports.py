"""agent transports: webhook, a2a, openai

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 14:30:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("transport", sa.String(16), server_default="webhook", nullable=False)
        )
        batch_op.add_column(sa.Column("transport_settings", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("transport_secret_encrypted", sa.Text(), nullable=True))
        batch_op.alter_column("webhook_url", existing_type=sa.String(2048), nullable=True)
    with op.batch_alter_table("chat_agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("continuation", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chat_agents", schema=None) as batch_op:
        batch_op.drop_column("continuation")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.alter_column("webhook_url", existing_type=sa.String(2048), nullable=False)
        batch_op.drop_column("transport_secret_encrypted")
        batch_op.drop_column("transport_settings")
        batch_op.drop_column("transport")
