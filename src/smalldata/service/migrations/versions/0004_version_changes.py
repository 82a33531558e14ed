"""A model version keeps the examples it was trained on (content keys and labels) and what changed from the
version before it (examples added, removed and relabelled per class; the accuracy before). Versions
made before this step have neither: the page says their changes are not known."""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("trained_on", sa.JSON, nullable=True))
        batch.add_column(sa.Column("changes", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("changes")
        batch.drop_column("trained_on")
