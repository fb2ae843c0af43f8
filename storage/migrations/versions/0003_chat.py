"""chat: the local group's room, inbound notes, bot settings, notice-message lookup

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "local_message",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("to", sa.String(length=64), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("card", sa.JSON(), nullable=True),
        sa.Column("reply_to", sa.Integer(), nullable=True),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_local_message")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_local_message_idempotency_key")),
        sa.UniqueConstraint("sender", "client_id", name=op.f("uq_local_message_sender_client_id")),
    )
    with op.batch_alter_table("inbound_event") as batch:
        batch.add_column(sa.Column("note", sa.String(length=32), nullable=True))
    op.create_index("ix_inbound_event_note", "inbound_event", ["note"], unique=False)
    op.create_table(
        "bot_setting",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_bot_setting")),
    )
    op.create_index(
        "ix_notice_message_lookup", "notice_message", ["platform", "message_id"], unique=False
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_notice_message_lookup", table_name="notice_message")
    op.drop_table("bot_setting")
    op.drop_index("ix_inbound_event_note", table_name="inbound_event")
    with op.batch_alter_table("inbound_event") as batch:
        batch.drop_column("note")
    op.drop_table("local_message")
