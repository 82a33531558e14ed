"""Keys and projects get owners (a user or a team: keys of one owner share its projects), keys can
be revoked, and a project has at most one unfinished job (a partial unique index). Everything made
before belongs to the owner "default", as every key made before does: nothing changes for it."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
UNFINISHED = sa.text("state IN ('queued', 'running')")


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("owner", sa.String(100), nullable=False, server_default="default"))
        batch.add_column(sa.Column("revoked", sa.DateTime, nullable=True))
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("owner", sa.String(100), nullable=False, server_default="default"))
    op.create_index("ix_projects_owner", "projects", ["owner"])
    fail_duplicate_unfinished_jobs()
    if "one_unfinished_job_per_project" in {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("jobs")}:
        return  # made by a development build that created it outside the migrations
    op.create_index("one_unfinished_job_per_project", "jobs", ["project_id"], unique=True,
                    sqlite_where=UNFINISHED, postgresql_where=UNFINISHED)


def fail_duplicate_unfinished_jobs() -> None:
    """Two unfinished jobs of one project (two requests at once, before the index): all but the
    oldest are failed, so that the index can be made."""
    op.execute(sa.text(
        "UPDATE jobs SET state = 'failed', error = 'a second job of the project started at the same time; "
        "the first one was kept' WHERE state IN ('queued', 'running') AND id NOT IN "
        "(SELECT MIN(id) FROM jobs WHERE state IN ('queued', 'running') GROUP BY project_id)"))


def downgrade() -> None:
    op.drop_index("one_unfinished_job_per_project", "jobs")
    op.drop_index("ix_projects_owner", "projects")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("owner")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("revoked")
        batch.drop_column("owner")
