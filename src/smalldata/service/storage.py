"""What the service keeps: projects, their examples, training jobs, model versions and API keys.

SQLAlchemy, so the same code runs on SQLite in the data folder (the default) or on PostgreSQL
(``--db postgresql+psycopg://...``). File contents live in the blob store; rows hold their hashes.
The schema is made and brought up to date by the Alembic steps in `migrations/`; a change to a
table here needs a step there.
"""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

MODALITIES = ("image", "text")
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
UNFINISHED = ("queued", "running")


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # naive UTC: the same on SQLite and PostgreSQL


class Base(DeclarativeBase):
    # SQLite otherwise hands a deleted row's id to the next row: a link or a client that kept the
    # old id would then reach another example or job.
    __table_args__ = {"sqlite_autoincrement": True}


DEFAULT_OWNER = "default"  # the owner of keys made without one, and of everything made before owners


class Project(Base):
    """Belongs to an owner (a user or a team): only keys of that owner see it or change it."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(100), index=True, default=DEFAULT_OWNER)
    name: Mapped[str] = mapped_column(String(200))
    modality: Mapped[str] = mapped_column(String(10))
    created: Mapped[datetime] = mapped_column(default=now)
    active_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", use_alter=True), default=None)
    # Seconds a training may take, as `smalldata train --budget`; None: the CLI's default (migration 0003).
    budget_s: Mapped[float | None] = mapped_column(Float, default=None)


class Example(Base):
    """One labeled image (its bytes in the blob store under `blob`) or text (in `text`)."""

    __tablename__ = "examples"
    __table_args__ = (UniqueConstraint("project_id", "content_hash"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    label: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the bytes or of the UTF-8 text
    embed_key: Mapped[str] = mapped_column(String(32))  # the embedding cache's key for this content
    text: Mapped[str | None] = mapped_column(Text, default=None)
    blob: Mapped[str | None] = mapped_column(String(64), default=None)
    filename: Mapped[str | None] = mapped_column(String(255), default=None)  # for display only, never a path
    created: Mapped[datetime] = mapped_column(default=now)


class UnlabeledExample(Base):
    """An image or text without a label: training may learn from it (self-training on the pool),
    never scores on it. A table of its own, so a database made before it existed only gains it."""

    __tablename__ = "unlabeled_examples"
    __table_args__ = (UniqueConstraint("project_id", "content_hash"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    embed_key: Mapped[str] = mapped_column(String(32))
    text: Mapped[str | None] = mapped_column(Text, default=None)
    blob: Mapped[str | None] = mapped_column(String(64), default=None)
    created: Mapped[datetime] = mapped_column(default=now)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    state: Mapped[str] = mapped_column(String(12), default="queued")
    stage: Mapped[str] = mapped_column(String(300), default="waiting for the worker")
    done: Mapped[int] = mapped_column(default=0)  # items done in the current stage
    total: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    n_examples: Mapped[int] = mapped_column(default=0)
    version_id: Mapped[int | None] = mapped_column(default=None)
    created: Mapped[datetime] = mapped_column(default=now)
    started: Mapped[datetime | None] = mapped_column(default=None)
    finished: Mapped[datetime | None] = mapped_column(default=None)
    budget_s: Mapped[float | None] = mapped_column(Float, default=None)  # what the training was given


# At most one queued or running job per project, kept by the database: two requests at once cannot
# both start one (the second's insert fails and is answered 409). Made by migration 0002.
Index("one_unfinished_job_per_project", Job.project_id, unique=True,
      sqlite_where=Job.state.in_(UNFINISHED), postgresql_where=Job.state.in_(UNFINISHED))


class ModelVersion(Base):
    """An immutable trained model: its folder under models/ never changes once written."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("project_id", "number"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    number: Mapped[int] = mapped_column()
    job_id: Mapped[int] = mapped_column()
    folder: Mapped[str] = mapped_column(String(100))  # relative to the data folder, made from ids only
    summary: Mapped[dict] = mapped_column(JSON)  # accuracy, baseline, confusion, most confused
    findings: Mapped[dict | None] = mapped_column(JSON, default=None)  # from the report, once it exists
    report: Mapped[str | None] = mapped_column(String(100), default=None)  # report file, once it exists
    # {"keys": [...], "labels": [...]}: the examples it learned from (by content), to tell the next
    # version what changed; and that, from the version before (`versions.changes`). NULL before 0004.
    trained_on: Mapped[dict | None] = mapped_column(JSON, default=None)
    changes: Mapped[dict | None] = mapped_column(JSON, default=None)
    created: Mapped[datetime] = mapped_column(default=now)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    owner: Mapped[str] = mapped_column(String(100), default=DEFAULT_OWNER)  # a user or a team
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the key; the key is never stored
    created: Mapped[datetime] = mapped_column(default=now)
    revoked: Mapped[datetime | None] = mapped_column(default=None)  # set by `smalldata api-key revoke`


def database_url(data_dir: Path, url: str | None) -> str:
    return url or f"sqlite:///{Path(data_dir).resolve() / 'smalldata.db'}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record):
            # WAL: readers do not wait for the job runner's writes; foreign keys are off by default.
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    migrate(engine)
    return engine


def migrate(engine: Engine) -> None:
    """Make the schema, or bring an older database's up to date (the Alembic steps in migrations/)."""
    from alembic import command

    with engine.begin() as connection:
        config = alembic_config(connection)
        tables = set(inspect(connection).get_table_names())
        if "projects" in tables and "alembic_version" not in tables:
            command.stamp(config, "0001")  # made before migrations existed: it holds the first step's tables
        command.upgrade(config, "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def fail_interrupted_jobs(sessions: sessionmaker[Session]) -> int:
    """Jobs left running by a crash or a restart: failed, with the reason. Examples and earlier
    versions are untouched (a version only exists once its folder is complete)."""
    with sessions.begin() as session:
        result = session.execute(
            update(Job).where(Job.state == "running").values(
                state="failed", finished=now(),
                error="the service stopped while this job ran; no example or earlier version was lost: train again")
        )
        return result.rowcount


def alembic_config(connection):
    """Alembic's settings for running the steps in migrations/ on `connection` (no alembic.ini)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("smalldata.service") / "migrations"))
    config.attributes["connection"] = connection
    return config


def insert_unless_present(session: Session, row: Base) -> Base | None:
    """Insert `row` unless a row with the same unique values is there (another request may have
    added it a moment ago): the database decides, so two identical uploads at once cannot both
    insert, nor fail. The new row, or None."""
    from sqlalchemy.dialects import postgresql, sqlite

    table = type(row)
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    values = {c.key: getattr(row, c.key) for c in table.__table__.columns if getattr(row, c.key) is not None}
    statement = insert(table).values(**values).on_conflict_do_nothing().returning(table)
    return session.scalars(statement).first()


def next_version_number(session: Session, project_id: int) -> int:
    numbers = session.scalars(select(ModelVersion.number).where(ModelVersion.project_id == project_id)).all()
    return max(numbers, default=0) + 1
