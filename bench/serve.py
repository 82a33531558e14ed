"""Benchmark `smalldata serve`: a real server on 127.0.0.1, driven over HTTP.

  python -m bench.serve train     # Train -> served model, flowers12 at 10 per class; retrain after adding 10
                                  # (--budget 0: the project's budget, instead of the CLI's default)
  python -m bench.serve predict   # p50/p99 latency and throughput, one image / one text, 1, 4, 16 clients
  python -m bench.serve poison    # 8 clients sending normal texts beside one sending malformed ones

Loopback only; every load run is bounded (requests and seconds) and the server is stopped at the
end. The load generator runs on the same machine as the server and takes CPU from it, so the
numbers are a lower bound on what the server alone would do. Results: bench/results/serve-*.json.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx2 as httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATASETS = ROOT.parent / "shared" / "datasets"
if not DATASETS.exists():
    DATASETS = Path("/work/shared/datasets")
FLOWERS = DATASETS / "flowers12"
SST2 = DATASETS / "sst2"
CLIENTS = (1, 4, 16)
REQUESTS = {1: 300, 4: 600, 8: 1000, 16: 1200}  # per run, at most
# Texts a hostile or broken client sends: each must get a 4xx (or an answer), never fail anyone else's.
POISON = ["x \udfff", "\ud800", "a\x00b", "", "   ", "\u202e\u0000", "\uffff\ufffe", "e\u0301" * 2000,
          "\u200b" * 4000, "word " * 999, "x" * 6000, "\x1b[31mred\x1b[0m", "\U0001f600" * 500]
RUN_SECONDS = 25  # per run, at most


class Server:
    def __init__(self, data: Path):
        self.data = data
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
        key = subprocess.run([sys.executable, "-m", "smalldata", "api-key", "create", "--data", str(data)],
                             env=env, check=True, capture_output=True, text=True).stdout.strip()
        self.headers = {"X-API-Key": key}
        # One client for every call: a fresh one per call (httpx.get) costs the polling loop
        # 30-60% of a core, taken from the training being timed.
        self.client = httpx.Client(base_url=self.url, headers=self.headers, timeout=120)
        self.process = subprocess.Popen([sys.executable, "-m", "smalldata", "serve", "--data", str(data),
                                         "--host", "127.0.0.1", "--port", str(self.port)], env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def stop(self):
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=30)

    def post(self, path, **kwargs):
        response = self.client.post(path, headers=self.headers, **kwargs)
        response.raise_for_status()
        return response.json()

    def get(self, path):
        return self.client.get(path).json()

    def wait_for_report(self, version_id: int) -> None:
        deadline = time.monotonic() + 120
        while not self.get(f"/api/versions/{version_id}")["report_ready"] and time.monotonic() < deadline:
            time.sleep(0.2)

    def train(self, project_id: int) -> tuple[float, dict]:
        """Seconds from pressing Train to a served version (job succeeded and a prediction answered)."""
        start = time.perf_counter()
        job = self.post(f"/api/projects/{project_id}/jobs")
        while True:
            job = self.get(f"/api/jobs/{job['id']}")
            if job["state"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        assert job["state"] == "succeeded", job
        return time.perf_counter() - start, job


def flower_zip(per_class: int, skip: int = 0) -> tuple[bytes, int]:
    buffer, n = io.BytesIO(), 0
    with zipfile.ZipFile(buffer, "w") as archive:
        for folder in sorted((FLOWERS / "train").iterdir()):
            for file in sorted(folder.iterdir())[skip: skip + per_class]:
                archive.write(file, f"{folder.name}/{file.name}")
                n += 1
    return buffer.getvalue(), n


def bench_train(data: Path, budget: str | None = None) -> dict:
    """`budget`: the project's training budget (None: the service's default, the CLI's)."""
    server = Server(data)
    try:
        made = {"name": "flowers12", "modality": "image", **({"budget": budget} if budget is not None else {})}
        project = server.post("/api/projects", json=made)
        archive, n = flower_zip(10)
        added = server.post(f"/api/projects/{project['id']}/examples/zip", files={"file": ("f.zip", archive, "application/zip")})
        assert len(added["added"]) == n == 120, added["rejected"]
        first, job = server.train(project["id"])
        version = server.get(f"/api/versions/{job['version_id']}")["summary"]
        server.wait_for_report(job["version_id"])  # the service idle again, as a user adding examples would find it
        extra = [file for folder in sorted((FLOWERS / "train").iterdir())[:10] for file in sorted(folder.iterdir())[10:11]]
        for file in extra:
            server.post(f"/api/projects/{project['id']}/examples/images", data={"label": file.parent.name},
                        files={"files": (file.name, file.read_bytes(), "image/jpeg")})
        again, job2 = server.train(project["id"])
        version2 = server.get(f"/api/versions/{job2['version_id']}")["summary"]
        return {"train_to_served_s": first, "n_examples": version["n_examples"], "chosen": version["chosen"],
                "cv_accuracy": version["accuracy"]["mean"], "retrain_s": again, "retrain_n_examples": version2["n_examples"],
                "budget_s": project["budget_s"], "retrain_chosen": version2["chosen"],
                "fine_tuning": [(v.get("fine_tuning") or {}).get("reason") for v in (version, version2)],
                "note": "first train in a fresh data folder; the embedding cache (SMALLDATA_CACHE) may hold flowers12 already"}
    finally:
        server.stop()


def load(url: str, headers: dict, make_request, clients: int) -> dict:
    """`clients` threads, each with its own keep-alive connection, sending requests back to back."""
    latencies, failures, lock = [], [], threading.Lock()
    budget = [REQUESTS[clients]]
    stop_at = time.monotonic() + RUN_SECONDS

    def client():
        with httpx.Client(base_url=url, headers=headers, timeout=30) as session:
            while time.monotonic() < stop_at:
                with lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                start = time.perf_counter()
                try:
                    response = make_request(session)
                    ok = response.status_code == 200
                except httpx.HTTPError as error:
                    ok, response = False, error
                elapsed = time.perf_counter() - start
                with lock:
                    (latencies if ok else failures).append(elapsed if ok else str(response))

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "failed": len(failures), "seconds": wall,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "per_second": len(latencies) / wall, "failures": failures[:5]}


def sst2_texts(split: str, n: int) -> list[tuple[str, str]]:
    with open(SST2 / f"{split}.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_label = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append((row["text"], row["label"]))
    return [pair for pairs in by_label.values() for pair in pairs[:n]]


def bench_predict(data: Path) -> dict:
    server = Server(data)
    try:
        images = server.post("/api/projects", json={"name": "flowers12", "modality": "image"})
        archive, _ = flower_zip(10)
        server.post(f"/api/projects/{images['id']}/examples/zip", files={"file": ("f.zip", archive, "application/zip")})
        texts = server.post("/api/projects", json={"name": "sst2", "modality": "text"})
        server.post(f"/api/projects/{texts['id']}/examples/texts",
                    json={"examples": [{"text": t, "label": l} for t, l in sst2_texts("train", 16)]})
        for project in (images, texts):
            _, job = server.train(project["id"])
            server.wait_for_report(job["version_id"])  # reports are written after the model is served
        test_image = sorted((FLOWERS / "test" / "daisy").iterdir())[0].read_bytes()
        test_texts = [t for t, _ in sst2_texts("test", 100)]
        counter = iter(range(10**9))

        def image_request(session):
            return session.post(f"/api/projects/{images['id']}/predict/images",
                                files={"files": ("daisy.jpg", test_image, "image/jpeg")})

        def text_request(session):
            return session.post(f"/api/projects/{texts['id']}/predict/texts",
                                json={"texts": [test_texts[next(counter) % len(test_texts)]]})

        results = {"image": [], "text": []}
        for kind, request in (("image", image_request), ("text", text_request)):
            with httpx.Client(base_url=server.url, headers=server.headers) as warm:
                for _ in range(20):
                    assert request(warm).status_code == 200
            for clients in CLIENTS:
                results[kind].append(load(server.url, server.headers, request, clients))
                print(kind, results[kind][-1], flush=True)
        return results
    finally:
        server.stop()


def bench_poison(data: Path) -> dict:
    """8 clients predicting normal texts, one more sending `POISON` the whole time: the 8 must see no
    failure, and the poison only 4xx answers."""
    server = Server(data)
    try:
        texts = server.post("/api/projects", json={"name": "sst2", "modality": "text"})
        server.post(f"/api/projects/{texts['id']}/examples/texts",
                    json={"examples": [{"text": t, "label": l} for t, l in sst2_texts("train", 16)]})
        _, job = server.train(texts["id"])
        server.wait_for_report(job["version_id"])
        path = f"/api/projects/{texts['id']}/predict/texts"
        test_texts = [t for t, _ in sst2_texts("test", 100)]
        counter = iter(range(10**9))
        poisoned, stop = {}, threading.Event()

        def poison():
            with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as session:
                for i in itertools.count():
                    if stop.is_set():
                        return
                    # json.dumps escapes lone surrogates as \\udfff: the server gets them as sent
                    body = json.dumps({"texts": [POISON[i % len(POISON)]]}).encode("ascii")
                    status = session.post(path, content=body, headers={"Content-Type": "application/json"}).status_code
                    poisoned[status] = poisoned.get(status, 0) + 1

        sender = threading.Thread(target=poison)
        sender.start()
        normal = load(server.url, server.headers,
                      lambda session: session.post(path, json={"texts": [test_texts[next(counter) % len(test_texts)]]}), 8)
        stop.set()
        sender.join()
        return {"normal_clients": normal, "poison_answers": {str(k): v for k, v in sorted(poisoned.items())}}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["train", "predict", "poison"])
    parser.add_argument("--budget", help="train: the project's training budget, e.g. 0 (default: the CLI's)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"serve-data-{args.part}-", dir=RESULTS) as folder:  # the service's data: gone after
        if args.part == "train":
            result = bench_train(Path(folder), args.budget)
        else:
            result = {"predict": bench_predict, "poison": bench_poison}[args.part](Path(folder))
    result = {"part": args.part, "machine": f"{os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "result": result}
    (RESULTS / f"serve-{args.part}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
