"""The schema's Alembic steps keep what a database holds: one made at the first revision (0001), with
rows in every table, is brought to the newest and still holds every row, on SQLite and PostgreSQL;
the columns later steps add read as unknown (NULL) for the old rows, and take new ones."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.service.conftest import fresh_database

WHEN = dt.datetime(2026, 1, 2, 3, 4, 5)


@pytest.fixture(params=["sqlite", "postgresql"])
def old_database(request, tmp_path):
    """The URL of a database at revision 0001 holding a row (or two) in each of its tables; and those rows."""
    import sqlalchemy as sa
    from alembic import command

    from smalldata.service.storage import alembic_config, database_url

    if request.param == "sqlite":
        url = database_url(tmp_path, None)
    else:
        url = fresh_database(request.getfixturevalue("postgres_server"))
    engine = sa.create_engine(url)
    rows = {
        "projects": [
            {"id": 1, "name": "flowers", "modality": "image", "created": WHEN, "active_version_id": None},
            {"id": 2, "name": "reviews", "modality": "text", "created": WHEN, "active_version_id": None}],
        "examples": [
            {"id": 1, "project_id": 1, "label": "rose", "content_hash": "a" * 64, "embed_key": "b" * 32,
             "text": None, "blob": "a" * 64, "filename": "rose 1.jpg", "created": WHEN},
            {"id": 2, "project_id": 2, "label": "good", "content_hash": "c" * 64, "embed_key": "d" * 32,
             "text": "Loved it ✓", "blob": None, "filename": None, "created": WHEN}],
        "unlabeled_examples": [
            {"id": 1, "project_id": 2, "content_hash": "e" * 64, "embed_key": "f" * 32, "text": "meh", "blob": None,
             "created": WHEN}],
        "jobs": [
            {"id": 1, "project_id": 1, "state": "succeeded", "stage": "version 1 is served", "done": 3, "total": 3,
             "error": None, "n_examples": 1, "version_id": 1, "created": WHEN, "started": WHEN, "finished": WHEN},
            {"id": 2, "project_id": 2, "state": "failed", "stage": "", "done": 0, "total": 0, "error": "a reason",
             "n_examples": 1, "version_id": None, "created": WHEN, "started": None, "finished": WHEN}],
        "model_versions": [
            {"id": 1, "project_id": 1, "number": 1, "job_id": 1, "folder": "versions/1",
             "summary": {"accuracy": {"mean": 0.9, "std": 0.1}, "confusion": [[1]]}, "findings": {"outliers": []},
             "report": "reports/1.html", "created": WHEN}],
        "api_keys": [{"id": 1, "name": "old key", "digest": "9" * 64, "created": WHEN}],
    }
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
        tables = sa.MetaData()
        tables.reflect(connection)
        assert set(rows) | {"alembic_version"} == set(tables.tables), "a table of 0001 has no row in this test"
        for name, table_rows in rows.items():
            connection.execute(tables.tables[name].insert(), table_rows)
        connection.execute(sa.text("UPDATE projects SET active_version_id = 1 WHERE id = 1"))
        if url.startswith("postgresql"):  # rows inserted with their ids: the sequences must follow
            for name in rows:
                connection.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                           f"(SELECT MAX(id) FROM {name}))"))
    engine.dispose()
    rows["projects"][0]["active_version_id"] = 1
    return url, rows


def test_a_database_at_0001_is_brought_up_to_date_and_keeps_every_row(old_database):
    import sqlalchemy as sa
    from alembic.script import ScriptDirectory

    from smalldata.service import auth
    from smalldata.service.storage import (
        Example,
        ModelVersion,
        Project,
        alembic_config,
        make_engine,
        session_factory,
    )
    from smalldata.service.versions import changes, snapshot

    url, rows = old_database
    engine = make_engine(url)  # what the service does when it opens the database
    with engine.connect() as connection:
        head = ScriptDirectory.from_config(alembic_config(connection)).get_current_head()
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == head
        tables = sa.MetaData()
        tables.reflect(connection)
        for name, before in rows.items():
            table = tables.tables[name]
            columns = [table.c[column] for column in before[0]]
            after = [dict(row._mapping) for row in connection.execute(sa.select(*columns).order_by(table.c.id))]
            assert after == before, name
        assert connection.execute(sa.text("SELECT DISTINCT owner FROM projects")).scalars().all() == ["default"]
        # 0004: a version made before it kept no examples, so what changed since is not known.
        assert connection.execute(sa.text("SELECT trained_on, changes FROM model_versions")).all() == [(None, None)]

    # The models read the upgraded rows, and the service can go on writing.
    sessions = session_factory(engine)
    with sessions.begin() as session:
        assert session.get(Project, 1).active_version_id == 1
        assert session.get(ModelVersion, 1).summary["confusion"] == [[1]]
        old_version = session.get(ModelVersion, 1)
        assert old_version.trained_on is None and old_version.changes is None
        trained_on = snapshot(["b" * 32], ["rose"])
        session.add(ModelVersion(project_id=1, number=2, job_id=1, folder="versions/2", summary={}, trained_on=trained_on,
                                 changes=changes(old_version, trained_on)))
        assert session.get(Example, 2).text == "Loved it ✓"
        session.add(Project(name="new", modality="text", owner="default"))
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.max(Project.id))) == 3
        newest = session.scalars(sa.select(ModelVersion).where(ModelVersion.number == 2)).one()
        assert newest.trained_on == {"keys": ["b" * 32], "labels": ["rose"]} and newest.changes["examples_known"] is False
        assert newest.changes["accuracy_before"]["n"] == 1
    assert auth.list_keys(sessions)[0].owner == "default"
    engine.dispose()
