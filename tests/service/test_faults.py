"""Faults no request can cause: the server itself killed with -9 while it trains.

The service runs as a real `smalldata serve` process here (the in-process TestClient cannot be
killed), with its training worker and the processes that worker runs fits in.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import DATA
from tests.service.test_api import group_ends


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def smalldata(*args: str, **options):
    return subprocess.run([sys.executable, "-m", "smalldata", *args], capture_output=True, text=True, check=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, **options)


class Server:
    def __init__(self, data_dir: Path, key: str):
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "smalldata", "serve", "--data", str(data_dir),
                                         "--port", str(self.port)], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers={"X-API-Key": key}, timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.client.get("/api/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("the server did not answer within 60 s")

    def worker_pid(self, wait: float = 0) -> int | None:
        """The training worker: the server's child that leads a process group of its own (once it
        has started: `wait` seconds at most)."""
        deadline = time.monotonic() + wait
        while (pid := self._worker_pid()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return pid

    def _worker_pid(self) -> int | None:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(stat.parent.name)
            if int(fields[1]) == self.process.pid and int(fields[2]) == pid:
                return pid
        return None

    def job(self, job_id: int) -> dict:
        return self.client.get(f"/api/jobs/{job_id}").json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.mark.slow
def test_kill_9_of_the_server_while_training_leaves_no_worker_and_loses_nothing(tmp_path):
    key = smalldata("api-key", "create", "--data", str(tmp_path)).stdout.strip()
    server = Server(tmp_path, key)
    try:
        pid = server.client.post("/api/projects", json={"name": "topics", "modality": "text"}).json()["id"]
        csv = (DATA / "topics.csv").read_bytes()
        assert server.client.post(f"/api/projects/{pid}/examples/csv", files={"file": ("t.csv", csv)}).status_code == 201
        job = server.client.post(f"/api/projects/{pid}/jobs").json()
        deadline = time.monotonic() + 60
        while server.job(job["id"])["state"] != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = server.worker_pid(wait=60)
        assert worker is not None and server.job(job["id"])["state"] == "running"
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        assert group_ends(worker, within=4)  # went with the server, long before the job could end by itself
    finally:
        if server.process.poll() is None:
            server.stop()

    again = Server(tmp_path, key)
    try:
        failed = again.job(job["id"])
        assert failed["state"] == "failed" and "service stopped" in failed["error"]
        assert again.client.get(f"/api/projects/{pid}").json()["n_examples"] == 24
        assert again.client.get(f"/api/projects/{pid}/versions").json() == []
        retry = again.client.post(f"/api/projects/{pid}/jobs").json()
        deadline = time.monotonic() + 180
        while again.job(retry["id"])["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert again.job(retry["id"])["state"] == "succeeded"
        assert [v["number"] for v in again.client.get(f"/api/projects/{pid}/versions").json()] == [1]
    finally:
        again.stop()
    assert again.worker_pid() is None
