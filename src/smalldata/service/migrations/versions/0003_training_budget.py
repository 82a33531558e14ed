"""A project has a training budget (seconds; NULL: the CLI's default, `smalldata.deadline.DEFAULT_BUDGET`),
and a job keeps the budget it was started with (NULL for jobs from before budgets: they had none)."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("budget_s", sa.Float, nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("budget_s", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("budget_s")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("budget_s")
