"""delivery: outbox claims, targets and purposes; job errors; shared rate windows

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("outbox_message") as batch:
        batch.add_column(sa.Column("target_key", sa.String(240), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("purpose", sa.String(32), nullable=False, server_default="message")
        )
        batch.add_column(sa.Column("person_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(100), nullable=True))
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key(
            op.f("fk_outbox_message_person_id_person"), "person", ["person_id"], ["id"]
        )
    op.execute(
        "UPDATE outbox_message SET target_key = platform || ':' || target_kind || ':' || target"
    )
    with op.batch_alter_table("outbox_message") as batch:
        batch.alter_column("target_key", server_default=None)
        batch.alter_column("purpose", server_default=None)
    op.create_index(
        "ix_outbox_message_target", "outbox_message", ["target_key", "state", "id"], unique=False
    )
    op.create_index(
        "ix_outbox_message_person",
        "outbox_message",
        ["person_id", "purpose", "created_at"],
        unique=False,
    )
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
    op.create_table(
        "rate_window",
        sa.Column("key", sa.String(length=240), nullable=False),
        sa.Column("sends", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_window")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("rate_window")
    with op.batch_alter_table("job") as batch:
        batch.drop_column("last_error")
    op.drop_index("ix_outbox_message_person", table_name="outbox_message")
    op.drop_index("ix_outbox_message_target", table_name="outbox_message")
    with op.batch_alter_table("outbox_message") as batch:
        batch.drop_constraint(op.f("fk_outbox_message_person_id_person"), type_="foreignkey")
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
        batch.drop_column("person_id")
        batch.drop_column("purpose")
        batch.drop_column("target_key")
