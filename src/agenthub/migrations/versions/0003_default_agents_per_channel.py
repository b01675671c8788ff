"""Default agents per channel: the agents a channel's new chats get

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:32:57.168437

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
    op.create_table(
        "channel_default_agents",
        sa.Column("channel_id", sa.String(length=16), nullable=False),
        sa.Column("agent_id", sa.String(length=16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_channel_default_agents_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_channel_default_agents_channel_id_channels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("channel_id", "agent_id", name=op.f("pk_channel_default_agents")),
    )
    with op.batch_alter_table("channel_default_agents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_channel_default_agents_agent_id"), ["agent_id"], unique=False
        )

    # Existing channels keep the hub-wide rule. `sa.false()`, not a literal 0: PostgreSQL
    # refuses an integer default on a boolean column.
    with op.batch_alter_table("channels", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "default_agents_listed", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("channels", schema=None) as batch_op:
        batch_op.drop_column("default_agents_listed")

    with op.batch_alter_table("channel_default_agents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_channel_default_agents_agent_id"))

    op.drop_table("channel_default_agents")
