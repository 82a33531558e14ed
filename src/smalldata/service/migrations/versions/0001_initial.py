"""The schema as it was before migrations existed: projects, examples, unlabeled examples, jobs,
model versions and API keys. A database made then is stamped with this step, not re-created."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    autoincrement = {"sqlite_autoincrement": True}  # SQLite: a deleted row's id is never given again
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("modality", sa.String(10), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("active_version_id", sa.Integer, nullable=True),
        **autoincrement)
    op.create_table(
        "examples",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False, index=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("embed_key", sa.String(32), nullable=False),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("blob", sa.String(64), nullable=True),
        sa.Column("filename", sa.String(255), nullable=True),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.UniqueConstraint("project_id", "content_hash"),
        **autoincrement)
    op.create_table(
        "unlabeled_examples",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False, index=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("embed_key", sa.String(32), nullable=False),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("blob", sa.String(64), nullable=True),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.UniqueConstraint("project_id", "content_hash"),
        **autoincrement)
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False, index=True),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("stage", sa.String(300), nullable=False),
        sa.Column("done", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("n_examples", sa.Integer, nullable=False),
        sa.Column("version_id", sa.Integer, nullable=True),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("started", sa.DateTime, nullable=True),
        sa.Column("finished", sa.DateTime, nullable=True),
        **autoincrement)
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False, index=True),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("folder", sa.String(100), nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("findings", sa.JSON, nullable=True),
        sa.Column("report", sa.String(100), nullable=True),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.UniqueConstraint("project_id", "number"),
        **autoincrement)
    with op.batch_alter_table("projects") as batch:
        batch.create_foreign_key("fk_projects_active_version", "model_versions", ["active_version_id"], ["id"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("created", sa.DateTime, nullable=False),
        **autoincrement)


def downgrade() -> None:
    raise NotImplementedError("the first schema has nothing before it")
