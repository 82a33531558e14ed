"""Training jobs, one at a time, in a worker process; never inside a request.

The worker is started once (spawn) and kept: backbones it loaded stay loaded, and the processes
its cross-validation fits run in stay warm, so a retrain pays only for what is new. The job
runner, a thread of the service, takes the oldest queued job from the database, hands the worker
a snapshot of the project's examples, and records what comes back.
Cancelling kills the worker and starts a fresh one; a worker that dies fails its job, and so does
any error while the runner records a job: a job is never left "running" without a worker on it.
Every message carries its job's id, and one for another job is dropped. The worker dies with the
service, even a killed one (`_die_with_parent`). A version exists only once its folder is complete
(written under a temporary name, then renamed), so neither a crash nor a cancel can leave half a
model or touch an earlier one.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import multiprocessing.util  # its exit hook (joining live children) registered before ours, so it runs after
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from multiprocessing.connection import wait
from pathlib import Path

from rich.text import Text
from sqlalchemy import select

from smalldata.progress import Progress
from smalldata.service import versions
from smalldata.service.storage import (
    Example,
    Job,
    ModelVersion,
    Project,
    UnlabeledExample,
    next_version_number,
    now,
)

log = logging.getLogger("smalldata.service")
PROGRESS_EVERY_S = 0.25  # at most this often a progress message crosses to the service
FIT_PROCESSES_IDLE_S = 1800  # the worker's fit processes (~300 MB each) end after this long unused
PARENT_CHECK_S = 1.0  # how often the worker looks whether the service is still there


# ----------------------------------------------------------------------------- in the worker

class _PipeTask:
    def __init__(self, send, description: str, total: int):
        self._send, self._description, self._total, self._done, self._last = send, description, total, 0, 0.0

    def advance(self, amount: int = 1) -> None:
        self._done += amount
        if time.monotonic() - self._last >= PROGRESS_EVERY_S or self._done >= self._total:
            self._last = time.monotonic()
            self._send(self._description, self._done, self._total)

    def done(self) -> None:
        self._send(self._description, self._total, self._total)


class PipeProgress(Progress):
    """The library's progress reports, sent to the service instead of drawn as bars."""

    def __init__(self, send):
        super().__init__(enabled=False)
        self._send = send

    def task(self, description: str, total: int) -> _PipeTask:
        self._send(description, 0, total)
        return _PipeTask(self._send, description, total)

    def log(self, message: str) -> None:
        self._send(Text.from_markup(message).plain, 0, 0)

    @contextmanager
    def spinner(self, description: str):
        self._send(description, 0, 0)  # the page shows the stage while it runs
        yield


def worker_main(conn, service_pid: int) -> None:
    """The worker process: train each job it is sent until it is sent None (or the service is gone)."""
    os.setpgrp()  # a process group of its own: stopping it stops the processes its fits run in, too
    threading.Thread(target=_die_with_parent, args=(service_pid,), name="smalldata-watchdog", daemon=True).start()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from joblib import parallel_config

    from smalldata.service import (
        training,  # imported here: the service process never loads torch for training
    )

    # Cross-validation fits in warm processes rather than threads: the linear heads' small torch
    # steps hold the GIL, and a retrain is about a third faster this way (bench/HISTORY.md). The
    # processes start with the first job and stay while the user adds examples and trains again.
    with parallel_config(backend="loky", idle_worker_timeout=FIT_PROCESSES_IDLE_S):
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the service stopped without saying so
                return
            if message is None:
                return
            job_id, spec = message
            try:
                _train(conn, job_id, spec, training)
            except Exception as error:  # any failure is the job's, reported with its message; the worker lives on
                conn.send(("failed", job_id, f"{type(error).__name__}: {error}"))


def _die_with_parent(service_pid: int) -> None:
    """End the worker's whole process group once the service is gone. A service killed with -9 runs
    no exit hook and the worker, busy training, would not read the closed pipe for minutes: its
    parent changing (to init or a subreaper) is the one sign that never fails to come."""
    while os.getppid() == service_pid:
        time.sleep(PARENT_CHECK_S)
    os.killpg(0, signal.SIGKILL)


def _train(conn, job_id: int, spec: dict, training) -> None:
    from smalldata.data import Dataset, as_inputs

    dataset = Dataset(as_inputs(spec["inputs"], spec["modality"]), spec["labels"], spec["modality"], spec["keys"], source=spec["source"])
    progress = PipeProgress(lambda stage, done, total: conn.send(("progress", job_id, stage, done, total)))
    pool = training.unlabeled_pool(spec["unlabeled_inputs"], dataset, progress)
    model = training.fit(dataset, progress, budget=spec["budget_s"], unlabeled=pool)
    model.save(spec["out_dir"])
    training.prepare_serving(model)
    conn.send(("model", job_id, training.summarize(model, dataset)))
    try:
        findings = training.report_findings(model, dataset, spec["ids"], spec["report_path"])
    except Exception as error:  # the model is served already; a report that fails only says so
        conn.send(("report_failed", job_id, f"{type(error).__name__}: {error}"))
        return
    try:
        findings["suggestions"] = training.suggestions(model, dataset, spec["unlabeled_inputs"], spec["unlabeled_ids"])
    except Exception as error:  # the report stands without them
        findings["suggestions_error"] = f"{type(error).__name__}: {error}"
    try:
        findings["learning_curve"] = training.learning_curve_findings(model, dataset)
    except Exception as error:  # the report stands without it
        findings["learning_curve_error"] = f"{type(error).__name__}: {error}"
    conn.send(("report", job_id, findings))


# ---------------------------------------------------------------------------- in the service

class JobRunner:
    def __init__(self, sessions, data_dir: Path, blobs, on_new_version=lambda project_id: None):
        self.sessions, self.data_dir, self.blobs = sessions, Path(data_dir), blobs
        self.on_new_version = on_new_version
        self.partial_dir = self.data_dir / "models" / ".partial"
        self.reports_dir = self.data_dir / "reports"
        self._wake, self._stop = threading.Event(), threading.Event()
        self._cancel: set[int] = set()
        self._orphans: dict[int, str] = {}  # job id -> why it failed, for jobs not yet marked so
        self._lock = threading.Lock()
        self._process = self._conn = None
        self._thread = threading.Thread(target=self._loop, name="smalldata-jobs", daemon=True)

    # --- life cycle
    def start(self) -> None:
        shutil.rmtree(self.partial_dir, ignore_errors=True)  # left by a crash: never a version
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        self._start_worker()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self._stop_worker(graceful=True)

    @property
    def worker_pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _start_worker(self) -> None:
        if self._stop.is_set():  # stopping: a job that ended meanwhile must not bring a worker back
            return
        context = multiprocessing.get_context("spawn")  # fork would copy the service's threads and sockets
        self._conn, child = context.Pipe()
        # Not a daemon: joblib runs no processes from a daemon. `stop()` ends it, and it ends by
        # itself when the service's end of the pipe closes.
        self._process = context.Process(target=worker_main, args=(child, os.getpid()), name="smalldata-trainer",
                                        daemon=False)
        self._process.start()
        _live_workers.add(self._process)
        child.close()

    def _stop_worker(self, *, graceful: bool) -> None:
        process, conn = self._process, self._conn
        if process is None:
            return
        if graceful and process.is_alive():
            try:
                conn.send(None)
                process.join(timeout=5)
            except (OSError, EOFError):
                pass
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
        _kill_group(process.pid)  # fit processes that outlived the worker (it was killed, or crashed)
        _live_workers.discard(process)
        conn.close()
        self._process = self._conn = None

    # --- requests from the API
    def submit(self) -> None:
        self._wake.set()

    def cancel(self, job_id: int) -> None:
        with self._lock:
            self._cancel.add(job_id)
        self._wake.set()

    # --- the runner thread
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._fail_orphans()
                claimed = self._claim_next()
                if claimed is None:
                    self._wake.wait(timeout=1.0)
                    self._wake.clear()
                    continue
                self._run(*claimed)
            except Exception:  # the runner must outlive any one job (e.g. the database away for a moment)
                if self._stop.is_set():  # stopping: the database may be gone already
                    return
                log.exception("job runner error")
                time.sleep(1.0)

    def _fail_orphans(self) -> None:
        """Fail the jobs an error left "running" (kept until the database takes the write)."""
        with self._lock:
            orphans, self._orphans = dict(self._orphans), {}
        try:
            for job_id, message in list(orphans.items()):
                self._finish(job_id, "failed", message, only_if_running=True)
                orphans.pop(job_id)
        finally:
            with self._lock:
                self._orphans.update(orphans)

    def _claim_next(self):
        with self.sessions.begin() as session:
            self._cancel_queued(session)
            job = session.scalars(select(Job).where(Job.state == "queued").order_by(Job.id).limit(1)).first()
            if job is None:
                return None
            project = session.get(Project, job.project_id)
            examples = session.scalars(select(Example).where(Example.project_id == job.project_id).order_by(Example.id)).all()
            unlabeled = session.scalars(select(UnlabeledExample).where(UnlabeledExample.project_id == job.project_id)
                                        .order_by(UnlabeledExample.id)).all()
            spec = {
                "modality": project.modality,
                "inputs": [str(self.blobs.path(e.blob)) if e.blob else e.text for e in examples],
                "labels": [e.label for e in examples],
                "keys": [e.embed_key for e in examples],
                "ids": [e.id for e in examples],
                "unlabeled_inputs": [str(self.blobs.path(u.blob)) if u.blob else u.text for u in unlabeled],
                "unlabeled_ids": [u.id for u in unlabeled],
                "source": f"smalldata serve: project {project.id} ({project.name})",
                "budget_s": job.budget_s,
                "out_dir": str(self.partial_dir / f"job-{job.id}"),
                "report_path": str(self.reports_dir / f"job-{job.id}.html"),
            }
            job.state, job.started, job.n_examples, job.stage = "running", now(), len(examples), "starting"
            return job.id, job.project_id, spec

    def _cancel_queued(self, session) -> None:
        with self._lock:
            wanted, self._cancel = set(self._cancel), set()
        for job_id in wanted:
            job = session.get(Job, job_id)
            if job is not None and job.state == "queued":
                job.state, job.finished, job.stage = "cancelled", now(), "cancelled before it started"
            elif job is not None and job.state == "running":
                with self._lock:
                    self._cancel.add(job_id)  # the running job's own loop acts on it

    def _run(self, job_id: int, project_id: int, spec: dict) -> None:
        """Follow one job to its end; on any error, fail it and start a fresh worker: the old one's
        pipe may still hold this job's messages, and the next job must not read them."""
        try:
            self._follow(job_id, project_id, spec)
        except Exception as error:
            log.exception("job %d: the runner failed while recording it", job_id)
            self._restart_worker()
            with self._lock:
                self._orphans[job_id] = (f"the service could not record this job ({type(error).__name__}: {error}); "
                                         "no example or earlier version was lost: train again")
            self._fail_orphans()
            shutil.rmtree(spec["out_dir"], ignore_errors=True)

    def _follow(self, job_id: int, project_id: int, spec: dict) -> None:
        if self._process is None or not self._process.is_alive():
            self._restart_worker()
            if self._process is None:  # the service is stopping: the job is marked failed at the next start
                return
        self._conn.send((job_id, spec))
        serving = False  # the model is in place; only the report is still being written
        while True:
            if self._stop.is_set():  # the service is stopping: the next start fails the job (fail_interrupted_jobs)
                return
            ready = wait([self._conn, self._process.sentinel], timeout=0.2)
            with self._lock:
                cancelled = job_id in self._cancel
                self._cancel.discard(job_id)
            if cancelled and not serving:
                self._restart_worker()
                self._finish(job_id, "cancelled", "cancelled; the worker was stopped and a fresh one started")
                shutil.rmtree(spec["out_dir"], ignore_errors=True)
                return
            if self._conn in ready:
                try:
                    message = self._conn.recv()
                except (EOFError, OSError):
                    message = ("died", job_id)
            elif self._process.sentinel in ready:
                message = ("died", job_id)
            else:
                continue
            kind = message[0]
            if message[1] != job_id:  # left over from an earlier job: never this job's answer
                log.warning("job %d: dropped a %r message of job %r", job_id, kind, message[1])
                continue
            if kind == "progress":
                self._progress(job_id, *message[2:])
            elif kind == "model":
                self._add_version(job_id, project_id, spec, message[2])
                serving = True
            elif kind in ("report", "report_failed"):
                self._add_report(job_id, spec, message[2] if kind == "report" else None)
                return
            elif kind == "failed":
                self._finish(job_id, "failed", message[2])
                shutil.rmtree(spec["out_dir"], ignore_errors=True)
                return
            elif kind == "died":
                how = self._worker_exit()
                self._restart_worker()
                if not serving:
                    self._finish(job_id, "failed", f"the training worker stopped unexpectedly ({how}); "
                                 "no example or earlier version was lost: train again")
                    shutil.rmtree(spec["out_dir"], ignore_errors=True)
                return

    def _worker_exit(self) -> str:
        """How the worker ended, in words (its exit code is known only once it is joined)."""
        self._process.join(timeout=5)
        code = self._process.exitcode
        if code is None:
            return "its pipe closed while it still ran"
        if code < 0:
            name = signal.Signals(-code).name
            hint = ": the machine may have run out of memory" if -code == signal.SIGKILL else ""
            return f"killed by {name}{hint}"
        return f"exit code {code}"

    def _restart_worker(self) -> None:
        self._stop_worker(graceful=False)
        self._start_worker()

    def _progress(self, job_id: int, stage: str, done: int, total: int) -> None:
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            job.stage, job.done, job.total = stage[:300], done, total

    def _finish(self, job_id: int, state: str, message: str, *, only_if_running: bool = False) -> None:
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            if job is None or (only_if_running and job.state != "running"):
                return
            job.state, job.finished = state, now()
            if state == "failed":
                job.error = message
            job.stage = message[:300]

    def _add_version(self, job_id: int, project_id: int, spec: dict, summary: dict) -> None:
        """Rename the finished folder into place, then record it; the new version answers predictions."""
        with self.sessions.begin() as session:
            number = next_version_number(session, project_id)
            folder = f"models/{project_id}/{number}"
            target = self.data_dir / folder
            target.parent.mkdir(parents=True, exist_ok=True)
            self._set_aside(target)
            os.replace(spec["out_dir"], target)
            trained_on = versions.snapshot(spec["keys"], spec["labels"])
            previous = session.scalars(select(ModelVersion).where(ModelVersion.project_id == project_id)
                                       .order_by(ModelVersion.number.desc()).limit(1)).first()
            version = ModelVersion(project_id=project_id, number=number, job_id=job_id, folder=folder, summary=summary,
                                   trained_on=trained_on, changes=versions.changes(previous, trained_on))
            session.add(version)
            session.flush()
            session.get(Project, project_id).active_version_id = version.id
            job = session.get(Job, job_id)
            job.state, job.finished, job.version_id = "succeeded", now(), version.id
            job.stage = f"version {number} is served; writing its report"
            job.done = job.total = 0
        self.on_new_version(project_id)

    def _set_aside(self, target: Path) -> None:
        """A folder where the next version goes has no row: a crash came between its rename and its
        commit. It was never served; it is moved to models/.orphaned rather than deleted."""
        if target.exists():
            aside = self.data_dir / "models" / ".orphaned" / f"{target.parent.name}-{target.name}-{time.time_ns()}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.replace(target, aside)
            log.warning("%s had no version recorded (left by a crash); moved to %s", target, aside)

    def _add_report(self, job_id: int, spec: dict, findings: dict | None) -> None:
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            version = session.get(ModelVersion, job.version_id)
            if findings is not None:
                version.findings, version.report = findings, Path(spec["report_path"]).name
                job.stage = f"version {version.number} is served; its report is ready"
            else:
                job.stage = f"version {version.number} is served; its report could not be written"


_live_workers: set = set()


@atexit.register
def _stop_live_workers() -> None:
    """Workers are not daemons (see `_start_worker`); one a runner did not stop ends with the service
    anyway. Registered after multiprocessing's own exit hook, so it runs before that joins them."""
    for process in list(_live_workers):
        if process.is_alive():
            process.kill()
        _kill_group(process.pid)


def _kill_group(pid: int) -> None:
    """SIGKILL what is left of the process group the worker made (`worker_main`); none may be left."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is empty already, or was never made
        pass
