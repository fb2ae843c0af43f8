"""audit keys: each audit row names its hash scheme; the head names the chain's key

Rows written before this revision keep their plain sha256 chain hashes and are marked
"sha256"; rows written with an audit key are "hmac-sha256" (docs/architecture.md, Audit
trail). The head's key_id identifies the key a keyed chain was written with.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("audit_event") as batch:
        batch.add_column(
            sa.Column("scheme", sa.String(length=16), nullable=False, server_default="sha256")
        )
    with op.batch_alter_table("audit_event") as batch:
        batch.alter_column("scheme", server_default=None)
    with op.batch_alter_table("audit_head") as batch:
        batch.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))


def downgrade() -> None:
    """Revert this revision (refused once a row is keyed: its hash means nothing plain)."""
    keyed = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM audit_event WHERE scheme <> 'sha256'"))
        .scalar()
    )
    if keyed:
        raise RuntimeError(
            f"{keyed} audit rows are keyed (hmac-sha256): a schema without the scheme column"
            " would verify them as plain sha256 and call them altered"
        )
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_column("scheme")
