"""the attempt log: each attempt's error kind, answer excerpt (text) and remote address

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 05:30:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # `response_excerpt` was a JSON column nothing wrote: it becomes the answer's text.
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_column("response_excerpt")
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("error_kind", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("response_excerpt", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("remote_address", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_column("remote_address")
        batch_op.drop_column("response_excerpt")
        batch_op.drop_column("error_kind")
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("response_excerpt", sa.JSON(), nullable=True))
