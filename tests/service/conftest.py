"""Fixtures for the service: a real PostgreSQL server (Debian's binaries, a throwaway cluster on a
unix socket), a running app per database, and a small trained text model shared by the tests.

Where PostgreSQL or Chromium is missing the tests that need them skip on a developer's machine,
but fail under CI (CI=true): CI must not go green by skipping.
"""

from __future__ import annotations

import glob
import io
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import DATA


def missing(what: str) -> None:
    message = f"{what} is not installed (`make test` installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + ": under CI this is a failure, not a skip")
    pytest.skip(message)


def _as_postgres(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; as another user it runs as that user.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_server():
    """A URL to a fresh PostgreSQL cluster, stopped and removed after the session."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        missing("PostgreSQL (Debian's postgresql package)")
    bin_dir = Path(binaries[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="smalldata-pg-"))
    data, socket = root / "data", root / "socket"
    socket.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(socket, "postgres")
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "smalldata",
                                 "-E", "UTF8", "--no-sync"]), check=True, capture_output=True)
    options = f"-k {socket} -c listen_addresses='' -p 5439 -c fsync=off"
    subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l",
                                 str(root / "log"), "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://smalldata@/postgres?host={socket}&port=5439"
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new, empty database on the test server; its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    plain = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return server_url.replace("/postgres?", f"/{name}?")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request):
    """A database URL (None: SQLite in the data folder) for each of the two databases."""
    if request.param == "sqlite":
        return None
    return fresh_database(request.getfixturevalue("postgres_server"))


class Service:
    """A running app with a TestClient that sends an API key, and one (`anonymous`) that sends none."""

    def __init__(self, client, key: str):
        from fastapi.testclient import TestClient

        self.client, self.key = client, key
        client.headers["X-API-Key"] = key
        self.anonymous = TestClient(client.app)  # the app has started already: this client only sends requests
        self.app = client.app
        self.state = client.app.state.service
        self.headers = {"X-API-Key": key}

    def post(self, path, headers=None, **kwargs):
        return self.client.post(path, headers={**self.headers, **(headers or {})}, **kwargs)

    def wait(self, job_id: int, *, report: bool = True, timeout: float = 120) -> dict:
        """The job once it has finished (and, with `report`, once its report is written)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/api/jobs/{job_id}").json()
            if job["state"] in ("failed", "cancelled"):
                return job
            if job["state"] == "succeeded" and (not report or "writing its report" not in job["stage"]):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")


def start_service(data_dir: Path, db_url: str | None, owner: str = "tests", **options):
    from fastapi.testclient import TestClient

    from smalldata.service import auth, create_app

    client = TestClient(create_app(data_dir, db_url=db_url, **options))
    client.__enter__()
    return Service(client, auth.create_key(client.app.state.service.sessions, "tests", owner))


@pytest.fixture(scope="module")
def service(backend, tmp_path_factory):
    from smalldata.service.uploads import Limits

    # Small limits, so that tests can pass them with small files.
    limits = Limits(max_request_bytes=2 * 2**20, max_file_bytes=2**20, max_files=40, max_pixels=1_000_000,
                    max_zip_bytes=4 * 2**20, max_rows=100, max_text_chars=500, max_predict_batch=8)
    running = start_service(tmp_path_factory.mktemp("service"), backend, limits=limits)
    yield running
    running.client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def text_project(service):
    """A text project with the topics examples, trained once (version 1)."""
    project = service.post("/api/projects", json={"name": "topics", "modality": "text"}).json()
    csv = (DATA / "topics.csv").read_bytes()
    added = service.post(f"/api/projects/{project['id']}/examples/csv", files={"file": ("topics.csv", csv, "text/csv")})
    assert added.status_code == 201, added.text
    job = service.post(f"/api/projects/{project['id']}/jobs")
    assert job.status_code == 202, job.text
    finished = service.wait(job.json()["id"])
    assert finished["state"] == "succeeded", finished
    return project


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def fashion_pngs(fashion):
    """{class: [PNG bytes, ...]} for 3 Fashion-MNIST classes: 8 to train, then 2 others to test."""
    from PIL import Image

    from smalldata.demo import CLASSES

    images, labels = fashion
    out = {}
    for name in ("trouser", "bag", "sneaker"):
        indices = (labels == CLASSES.index(name)).nonzero()[0]
        out[name] = [png_bytes(Image.fromarray(images[i]).convert("RGB")) for i in list(indices[:8]) + list(indices[200:202])]
    return out
