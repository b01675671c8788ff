"""channel rules: chats' last contact message time (reply windows) and messages' send errors

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 07:40:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chats", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_contact_message_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("error", sa.JSON(), nullable=True))
    # The chats that already have contact messages: their window runs from the newest one.
    op.execute(
        "UPDATE chats SET last_contact_message_at = ("
        "SELECT MAX(messages.timestamp) FROM messages "
        "WHERE messages.chat_id = chats.id AND messages.sender_type = 'CONTACT')"
    )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("error")
    with op.batch_alter_table("chats", schema=None) as batch_op:
        batch_op.drop_column("last_contact_message_at")
