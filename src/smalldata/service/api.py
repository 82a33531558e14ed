"""The REST API over projects, examples, training jobs, model versions and predictions.

Every request needs an API key (`key_owner`), and reaches only the projects of the key's owner: one
of another owner is a 404, as if it did not exist. A service started with --public-read lets anyone
read (`reader`); writes and predictions still need a key. Endpoints are plain functions (FastAPI
runs them in its thread pool), so a long request never blocks another.
"""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import (
    APIRouter,
    Depends,
    File,
    Form,
    HTTPException,
    Path,
    Query,
    Request,
    Security,
    UploadFile,
)
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from smalldata.data import Dataset
from smalldata.deadline import DEFAULT_BUDGET, parse_budget
from smalldata.features import hash_bytes
from smalldata.evaluate import UNEVEN_RATIO
from smalldata.service import auth, versions
from smalldata.service.blobs import sha256
from smalldata.service.predictor import answers
from smalldata.unknown import CutOff
from smalldata.service.schemas import (
    AccuracyInterval,
    Added,
    ErrorOut,
    ExampleOut,
    JobOut,
    Predictions,
    PredictTexts,
    ProjectIn,
    ProjectOut,
    ProjectUpdate,
    Relabel,
    TextsIn,
    UnlabeledAdded,
    UnlabeledTextsIn,
    VersionOut,
)
from smalldata.service.storage import (
    DEFAULT_OWNER,
    UNFINISHED,
    Example,
    Job,
    ModelVersion,
    Project,
    UnlabeledExample,
    insert_unless_present,
)
from smalldata.service.training import check_trainable
from smalldata.service.uploads import (
    Rejected,
    UploadError,
    check_image,
    check_label,
    check_text,
    display_name,
    read_csv,
    read_zip,
)
from smalldata.text_utils import shorten


def state(request: Request):
    return request.app.state.service


# Declared so that the OpenAPI description names the two ways to send a key; `key_owner` reads them.
KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="a key from `smalldata api-key create`")
BEARER = HTTPBearer(auto_error=False, description="the same key, as `Authorization: Bearer KEY`")


def sent_key(header: str | None, bearer: HTTPAuthorizationCredentials | None) -> str | None:
    return (header or "").strip() or (bearer.credentials.strip() if bearer else None) or None


async def key_owner(request: Request, header: str | None = Security(KEY_HEADER),
                    bearer: HTTPAuthorizationCredentials | None = Security(BEARER)) -> str:
    """The owner of the key sent: every request needs one (reads too, unless --public-read; none while
    `keyless`), and reaches only its owner's projects. Async, with keys seen lately in memory: a prediction pays no
    thread hand-over and no database trip for its key."""
    keys = state(request).keys
    key = sent_key(header, bearer)
    # While keyless, a key sent is no key (none can be known); a snippet copied with its placeholder works.
    if state(request).loopback_only and not keys.some_made and await run_in_threadpool(keyless, request):
        return DEFAULT_OWNER
    if key is None:
        raise HTTPException(401, "an API key is needed: send it as 'X-API-Key: KEY' (make one with `smalldata api-key create`)",
                            headers={"WWW-Authenticate": "Bearer"})
    known, owner = keys.fresh(key)
    if not known:
        owner = await run_in_threadpool(keys.look_up, key)
    if owner is None:
        raise HTTPException(403, "this API key is not known here or was revoked: make one with `smalldata api-key create`")
    return owner


def keyless(request: Request) -> bool:
    """Local use without ceremony: a service that listens on loopback only (`smalldata serve` with
    the default --host), while no API key has ever been made, takes requests without a key, as the
    owner that `smalldata api-key create` gives a key by default (so a first key sees what was made
    before it). Not for a request a proxy passed on (it came from elsewhere), nor from a client that
    is not this machine."""
    service = state(request)
    client = request.client.host if request.client else ""
    # none_made first: once it has seen a key it answers from memory, and `key_owner` asks no more.
    return (service.loopback_only and service.keys.none_made() and auth.is_loopback(client)
            and not any(name in request.headers for name in auth.PROXY_HEADERS))


async def reader(request: Request, header: str | None = Security(KEY_HEADER),
                 bearer: HTTPAuthorizationCredentials | None = Security(BEARER)) -> str | None:
    """Whose projects a read may see: the key's owner's; everyone's (None) where the service was
    started with --public-read, key or not."""
    if state(request).public_read:
        return None
    return await key_owner(request, header, bearer)


Owner = Annotated[str, Depends(key_owner)]
Reader = Annotated[str | None, Depends(reader)]


def session(request: Request):
    with state(request).sessions() as db:
        yield db


MAX_ID = 2**31 - 1  # the databases' integer columns: a larger id or offset is a 422, not an overflow in the database
Id = Annotated[int, Path(ge=1, le=MAX_ID, description="a row id")]

WHY = {400: "the body cannot be read (not JSON, or broken multipart)", 401: "no API key was sent", 403: "the API key is not known here", 404: "no such project, example, job or version",
       409: "the request conflicts with the project's state (no model yet, a job already running, ...)",
       413: "too large: a body, a file, or too many items", 415: "not a kind of file the service reads",
       422: "invalid input: what is wrong and what to do", 507: "the server's disk is full: nothing was added"}


def errors(*codes: int) -> dict:
    """The OpenAPI description of the error answers a route can give (all `{"detail": ...}`)."""
    return {code: {"model": ErrorOut, "description": WHY[code]} for code in codes}


UPLOAD_ERRORS = errors(409, 413, 415, 507)
router = APIRouter(prefix="/api", responses=errors(400, 401, 403, 404, 422))


# ----------------------------------------------------------------------------------- projects

@router.post("/projects", status_code=201, response_model=ProjectOut, tags=["projects"])
def create_project(owner: Owner, body: ProjectIn, request: Request, db=Depends(session)):
    name = checked_name(body.name)
    project = Project(name=name, modality=body.modality, owner=owner, budget_s=checked_budget(body.budget))
    db.add(project)
    db.commit()
    return project_out(db, project)


@router.patch("/projects/{project_id}", response_model=ProjectOut, tags=["projects"])
def update_project(owner: Owner, project_id: Id, body: ProjectUpdate, db=Depends(session)):
    """Rename the project or change its training budget (the next training uses it)."""
    project = find(db, Project, project_id, owner)
    if body.name is not None:
        project.name = checked_name(body.name)
    if body.budget is not None:
        project.budget_s = checked_budget(body.budget)
    db.commit()
    return project_out(db, project)


MAX_BUDGET_S = 24 * 3600  # the worker trains one job at a time: a project must not hold it for days


def checked_budget(budget: str | float | None) -> float | None:
    """Seconds, from what `smalldata train --budget` takes; None: the CLI's default."""
    if budget is None:
        return None
    seconds = parse_budget(budget)
    if not math.isfinite(seconds) or seconds > MAX_BUDGET_S:
        raise HTTPException(422, f"a budget is at most 24h, not {budget!r}: give e.g. 90s, 5m or 1h")
    return seconds


def budget_of(project: Project) -> float:
    return project.budget_s if project.budget_s is not None else parse_budget(DEFAULT_BUDGET)


@router.get("/projects", response_model=list[ProjectOut], tags=["projects"])
def list_projects(owner: Reader, db=Depends(session)):
    query = select(Project).order_by(Project.id)
    if owner is not None:
        query = query.where(Project.owner == owner)
    return [project_out(db, p) for p in db.scalars(query).all()]


@router.get("/projects/{project_id}", response_model=ProjectOut, tags=["projects"])
def get_project(owner: Reader, project_id: Id, db=Depends(session)):
    return project_out(db, find(db, Project, project_id, owner))


def checked_name(name: str) -> str:
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if not name:
        raise HTTPException(422, "the project name is empty: give it a name")
    return name


def project_out(db, project: Project) -> ProjectOut:
    counts = dict(db.execute(select(Example.label, func.count()).where(Example.project_id == project.id)
                             .group_by(Example.label).order_by(Example.label)).all())
    active = db.get(ModelVersion, project.active_version_id) if project.active_version_id else None
    job = db.scalars(select(Job).where(Job.project_id == project.id).order_by(Job.id.desc()).limit(1)).first()
    return ProjectOut(id=project.id, name=project.name, modality=project.modality, created=project.created,
                      n_examples=sum(counts.values()), n_unlabeled=count_unlabeled(db, project.id),
                      counts=counts, problems=problems(counts),
                      active_version=version_out(active, project) if active else None,
                      latest_job=JobOut.model_validate(job, from_attributes=True) if job else None,
                      budget_s=budget_of(project), budget_is_default=project.budget_s is None)


Threshold = Annotated[float | None, Query(ge=0, le=1, description="answer 'unknown' where the top class's calibrated "
                                                                  "probability is below this")]
UnknownFloor = Annotated[bool, Query(description="answer 'unknown' for inputs that look like no class seen in training")]


def problems(counts: dict[str, int]) -> list[str]:
    """What stops training or weakens it, in words, before anything is trained."""
    found = []
    if len(counts) < 2:
        found.append(f"{len(counts)} {'class' if len(counts) == 1 else 'classes'} so far: a classifier needs examples of at least 2 classes")
    for label, n in counts.items():
        if n < 2:
            found.append(f"class {label!r} has {n} example: cross-validation needs at least 2 per class")
        elif n < 5:
            found.append(f"class {label!r} has only {n} examples: accuracy estimates will be rough; 10 or more per class are better")
    if counts and uneven_counts(counts):
        largest = max(counts, key=counts.get)
        behind = [label for label, n in counts.items() if counts[largest] > UNEVEN_RATIO * n]
        found.append(f"{'class' if len(behind) == 1 else 'classes'} {', '.join(map(repr, behind))} far behind "
                     f"{largest!r} ({counts[largest]} examples; more than {UNEVEN_RATIO:g}x as many): training weighs "
                     "classes by their counts and chooses on balanced accuracy, but more examples of the small "
                     "classes help most")
    return found


def uneven_counts(counts: dict[str, int]) -> bool:
    return max(counts.values()) > UNEVEN_RATIO * min(counts.values())


# ----------------------------------------------------------------------------------- examples

NOTHING_NEW = {200: {"description": "nothing new: every example was in the project already"}}


@router.post("/projects/{project_id}/examples/images", status_code=201, response_model=Added,
             tags=["examples"], responses={**UPLOAD_ERRORS, **NOTHING_NEW})
def add_images(owner: Owner, project_id: Id, request: Request, label: str = Form(...), files: list[UploadFile] = File(...),
               db=Depends(session)):
    """Several images of one class (multipart: `label` and one or more `files`)."""
    service = state(request)
    project = find(db, Project, project_id, owner, modality="image")
    label = check_label(label, service.limits)
    images, rejected = checked_images(files, service.limits)
    return store_images(db, service, project, [(label, name, data) for name, data in images], rejected)


def checked_images(files: list[UploadFile], limits) -> tuple[list[tuple[str, bytes]], list[Rejected]]:
    """(display name, bytes) of each upload that is an image within the limits; the others, with why."""
    if len(files) > limits.max_files:
        raise UploadError(413, f"{len(files)} files in one request, more than the {limits.max_files} allowed")
    images, rejected = [], []
    for upload in files:
        data = upload.file.read(limits.max_file_bytes + 1)
        name = display_name(upload.filename)
        try:
            check_image(data, limits)
        except UploadError as error:
            rejected.append(Rejected(name, error.message))
            continue
        images.append((name, data))
    return images, rejected


@router.post("/projects/{project_id}/examples/zip", status_code=201, response_model=Added,
             tags=["examples"], responses={**UPLOAD_ERRORS, **NOTHING_NEW})
def add_zip(owner: Owner, project_id: Id, request: Request, file: UploadFile = File(...), db=Depends(session)):
    """A zip of class folders: CLASS/IMAGE (any folders above the class folders are ignored)."""
    service = state(request)
    project = find(db, Project, project_id, owner, modality="image")
    items, rejected = read_zip(file.file.read(service.limits.max_request_bytes + 1), service.limits)
    return store_images(db, service, project, items, rejected)


@router.post("/projects/{project_id}/examples/texts", status_code=201, response_model=Added,
             tags=["examples"], responses={**UPLOAD_ERRORS, **NOTHING_NEW})
def add_texts(owner: Owner, project_id: Id, body: TextsIn, request: Request, db=Depends(session)):
    service = state(request)
    project = find(db, Project, project_id, owner, modality="text")
    if len(body.examples) > service.limits.max_rows:
        raise UploadError(413, f"{len(body.examples)} texts in one request, more than the {service.limits.max_rows} allowed")
    items = [(check_text(e.text, service.limits), check_label(e.label, service.limits)) for e in body.examples]
    return store_texts(db, project, items, [])


@router.post("/projects/{project_id}/examples/csv", status_code=201, response_model=Added,
             tags=["examples"], responses={**UPLOAD_ERRORS, **NOTHING_NEW})
def add_csv(owner: Owner, project_id: Id, request: Request, file: UploadFile = File(...), db=Depends(session)):
    """A CSV or TSV with a header naming the columns `text` and `label`."""
    service = state(request)
    project = find(db, Project, project_id, owner, modality="text")
    items, rejected = read_csv(file.file.read(service.limits.max_request_bytes + 1), service.limits)
    return store_texts(db, project, items, rejected)


def store_images(db, service, project: Project, items, rejected: list[Rejected]) -> Added:
    rows = []
    for label, name, data in items:
        digest = sha256(data)
        rows.append((Example(project_id=project.id, label=label, content_hash=digest, embed_key=hash_bytes(data),
                             blob=digest, filename=name), data))
    return store(db, project, rows, rejected, service.blobs)


def store_texts(db, project: Project, items, rejected: list[Rejected]) -> Added:
    rows = [(Example(project_id=project.id, label=label, content_hash=sha256(text.encode("utf-8")),
                     embed_key=hash_bytes(text.encode("utf-8")), text=text), None) for text, label in items]
    return store(db, project, rows, rejected, None)


def store(db, project: Project, rows, rejected: list[Rejected], blobs) -> Added:
    """Add the new examples; one whose content the project has already is left out and said so."""
    lock_project(db, project)
    added = []
    for example, data in rows:
        if data is not None:
            blobs.put(data)  # before the row: a row never points at a missing file
        row = insert_unless_present(db, example)
        if row is None:
            label = db.scalar(select(Example.label).where(Example.project_id == project.id,
                                                          Example.content_hash == example.content_hash))
            name = example.filename or shorten(example.text)
            rejected.append(Rejected(name, f"{ALREADY_THERE} (labeled {label!r}): relabel that one instead"))
            continue
        added.append(row)
    db.commit()
    return answered(Added(added=[ExampleOut.model_validate(e, from_attributes=True) for e in added],
                          rejected=[{"name": r.name, "reason": r.reason} for r in rejected]), len(added), rejected)


def lock_project(db, project: Project) -> None:
    """Uploads to one project take turns (PostgreSQL: a row lock until commit; SQLite's writes take
    turns anyway). Two uploads sharing content in different orders would otherwise each wait for
    a row the other inserted, and PostgreSQL would break the deadlock with an error."""
    db.execute(select(Project.id).where(Project.id == project.id).with_for_update())


ALREADY_THERE = "already in the project"


def answered(result, n_added: int, rejected: list[Rejected]):
    """201 with what was added; 200 when every item was there already; 422 when nothing could be
    added, with why (a list of rejections under a 201 hid that the upload did nothing)."""
    if n_added:
        return result
    if rejected and all(r.reason.startswith(ALREADY_THERE) for r in rejected):
        return JSONResponse(result.model_dump(mode="json"), status_code=200)
    reasons = "; ".join(f"{r.name}: {r.reason}" for r in rejected[:5])
    more = f" (and {len(rejected) - 5} more)" if len(rejected) > 5 else ""
    raise UploadError(422, f"nothing was added: {reasons}{more}")


# -------------------------------------------------------------------------- unlabeled examples

@router.post("/projects/{project_id}/unlabeled/images", status_code=201, response_model=UnlabeledAdded,
             tags=["unlabeled"], responses={**UPLOAD_ERRORS, **NOTHING_NEW})
def add_unlabeled_images(owner: Owner, project_id: Id, request: Request, files: list[UploadFile] = File(...), db=Depends(session)):
    """Images without labels (multipart `files`): training may learn from them too, and keeps what
    they add only where cross-validation does not show harm."""
    service = state(request)
    project = find(db, Project, project_id, owner, modality="image")
    images, rejected = checked_images(files, service.limits)
    rows = [(UnlabeledExample(project_id=project.id, content_hash=sha256(data), embed_key=hash_bytes(data),
                              blob=sha256(data)), data, name) for name, data in images]
    return store_unlabeled(db, project, rows, rejected, service.blobs)


@router.post("/projects/{project_id}/unlabeled/texts", status_code=201, response_model=UnlabeledAdded,
             tags=["unlabeled"], responses={**UPLOAD_ERRORS, **NOTHING_NEW})
def add_unlabeled_texts(owner: Owner, project_id: Id, body: UnlabeledTextsIn, request: Request, db=Depends(session)):
    service = state(request)
    project = find(db, Project, project_id, owner, modality="text")
    if len(body.texts) > service.limits.max_rows:
        raise UploadError(413, f"{len(body.texts)} texts in one request, more than the {service.limits.max_rows} allowed")
    rows = []
    for text in body.texts:
        text = check_text(text, service.limits)
        content = text.encode("utf-8")
        rows.append((UnlabeledExample(project_id=project.id, content_hash=sha256(content),
                                      embed_key=hash_bytes(content), text=text), None, shorten(text)))
    return store_unlabeled(db, project, rows, [], None)


def store_unlabeled(db, project: Project, rows, rejected: list[Rejected], blobs) -> UnlabeledAdded:
    """Add what is new; a copy of a labeled or an unlabeled example already there is left out (a
    labeled copy in the pool would be scored and learned from at once)."""
    labeled = set(db.scalars(select(Example.content_hash).where(Example.project_id == project.id)).all())
    added = 0
    lock_project(db, project)
    for row, data, name in rows:
        if row.content_hash in labeled:
            rejected.append(Rejected(name, ALREADY_THERE))
            continue
        if data is not None:
            blobs.put(data)  # before the row: a row never points at a missing file
        if insert_unless_present(db, row) is None:
            rejected.append(Rejected(name, ALREADY_THERE))
            continue
        added += 1
    db.commit()
    result = UnlabeledAdded(added=added, n_unlabeled=count_unlabeled(db, project.id),
                            rejected=[{"name": r.name, "reason": r.reason} for r in rejected])
    return answered(result, added, rejected)


def count_unlabeled(db, project_id: int) -> int:
    return db.scalar(select(func.count()).select_from(UnlabeledExample).where(UnlabeledExample.project_id == project_id))


@router.delete("/projects/{project_id}/unlabeled", status_code=204, tags=["unlabeled"])
def delete_unlabeled(owner: Owner, project_id: Id, db=Depends(session)):
    """Forget every unlabeled example of the project (labeled examples and versions stay)."""
    find(db, Project, project_id, owner)
    db.execute(delete(UnlabeledExample).where(UnlabeledExample.project_id == project_id))
    db.commit()
    return Response(status_code=204)


@router.get("/unlabeled/{unlabeled_id}/content", tags=["unlabeled"],
            responses={200: {"content": {"image/*": {}, "text/plain": {}}}})
def unlabeled_content(owner: Reader, unlabeled_id: Id, request: Request, db=Depends(session)):
    """The unlabeled image's bytes (or the text), for the page's "label these next"."""
    return content_of(find(db, UnlabeledExample, unlabeled_id, owner), state(request))


@router.post("/unlabeled/{unlabeled_id}/label", status_code=201, response_model=ExampleOut, tags=["unlabeled"],
             responses=errors(409))
def label_unlabeled(owner: Owner, unlabeled_id: Id, body: Relabel, request: Request, db=Depends(session)):
    """Give an unlabeled example its class: it becomes a labeled example (the next training uses it)."""
    unlabeled = find(db, UnlabeledExample, unlabeled_id, owner)
    label = check_label(body.label, state(request).limits)
    lock_project(db, db.get(Project, unlabeled.project_id))
    example = insert_unless_present(db, Example(project_id=unlabeled.project_id, label=label,
                                                content_hash=unlabeled.content_hash, embed_key=unlabeled.embed_key,
                                                text=unlabeled.text, blob=unlabeled.blob))
    db.delete(unlabeled)  # in the same commit as the labeled copy: the example is never lost nor in both
    db.commit()
    if example is None:  # labeled meanwhile (an upload of the same content)
        raise HTTPException(409, "this example is a labeled example already: it has left the unlabeled ones")
    return example


@router.get("/projects/{project_id}/examples", response_model=list[ExampleOut], tags=["examples"])
def list_examples(owner: Reader, project_id: Id, request: Request, label: str | None = Query(None, max_length=200),
                  offset: int = Query(0, ge=0, le=MAX_ID), limit: int = Query(100, ge=1, le=1000), db=Depends(session)):
    find(db, Project, project_id, owner)
    query = select(Example).where(Example.project_id == project_id)
    if label is not None:
        query = query.where(Example.label == check_label(label, state(request).limits))
    return db.scalars(query.order_by(Example.id).offset(offset).limit(limit)).all()


@router.get("/examples/{example_id}", response_model=ExampleOut, tags=["examples"])
def get_example(owner: Reader, example_id: Id, db=Depends(session)):
    return find(db, Example, example_id, owner)


@router.get("/examples/{example_id}/content", tags=["examples"],
            responses={200: {"content": {"image/*": {}, "text/plain": {}}}})
def example_content(owner: Reader, example_id: Id, request: Request, db=Depends(session)):
    """The image's bytes (or the text), for thumbnails on the page."""
    return content_of(find(db, Example, example_id, owner), state(request))


def content_of(example, service) -> Response:
    if example.blob is None:
        return Response(example.text, media_type="text/plain; charset=utf-8", headers={"X-Content-Type-Options": "nosniff"})
    data = service.blobs.read(example.blob)
    return Response(data, media_type=image_type(data), headers={"Cache-Control": "max-age=86400, immutable",
                                                                "X-Content-Type-Options": "nosniff"})


@router.patch("/examples/{example_id}", response_model=ExampleOut, tags=["examples"])
def relabel(owner: Owner, example_id: Id, body: Relabel, request: Request, db=Depends(session)):
    example = find(db, Example, example_id, owner)
    example.label = check_label(body.label, state(request).limits)
    db.commit()
    return example


@router.delete("/examples/{example_id}", status_code=204, tags=["examples"])
def delete_example(owner: Owner, example_id: Id, db=Depends(session)):
    """Removes the example from the project; versions trained on it keep their own folders."""
    db.delete(find(db, Example, example_id, owner))
    db.commit()
    return Response(status_code=204)


# --------------------------------------------------------------------------------------- jobs

@router.post("/projects/{project_id}/jobs", status_code=202, response_model=JobOut, tags=["jobs"],
             responses=errors(409))
def start_training(owner: Owner, project_id: Id, request: Request, db=Depends(session)):
    """Queue a training job on the project's examples as they are now; poll GET /api/jobs/{id}."""
    project = find(db, Project, project_id, owner)
    if db.scalars(select(Job.id).where(Job.project_id == project_id, Job.state.in_(UNFINISHED))).first():
        raise HTTPException(409, "a training job of this project is already queued or running: wait for it or cancel it")
    rows = db.execute(select(Example.id, Example.label, Example.embed_key).where(Example.project_id == project_id)).all()
    if not rows:
        raise HTTPException(422, "the project has no examples yet: add some of at least 2 classes")
    check_trainable(Dataset([r.id for r in rows], [r.label for r in rows], project.modality, [r.embed_key for r in rows]))
    job = Job(project_id=project_id, n_examples=len(rows), budget_s=budget_of(project))
    try:
        db.add(job)
        db.commit()
    except IntegrityError as error:  # another request started one a moment ago (one unfinished job per project)
        raise HTTPException(409, "a training job of this project is already queued or running: wait for it or cancel it") from error
    state(request).runner.submit()
    return job


@router.get("/projects/{project_id}/jobs", response_model=list[JobOut], tags=["jobs"])
def list_jobs(owner: Reader, project_id: Id, db=Depends(session)):
    find(db, Project, project_id, owner)
    return db.scalars(select(Job).where(Job.project_id == project_id).order_by(Job.id.desc())).all()


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"])
def get_job(owner: Reader, job_id: Id, db=Depends(session)):
    return find(db, Job, job_id, owner)


@router.post("/jobs/{job_id}/cancel", status_code=202, response_model=JobOut, tags=["jobs"],
             responses=errors(409))
def cancel_job(owner: Owner, job_id: Id, request: Request, db=Depends(session)):
    """Stop a queued or running job; its state turns to "cancelled" within a moment."""
    job = find(db, Job, job_id, owner)
    if job.state not in UNFINISHED:
        raise HTTPException(409, f"job {job_id} has already {job.state}: nothing to cancel")
    state(request).runner.cancel(job_id)
    return job


# ----------------------------------------------------------------------------------- versions

@router.get("/projects/{project_id}/versions", response_model=list[VersionOut], tags=["versions"])
def list_versions(owner: Reader, project_id: Id, db=Depends(session)):
    project = find(db, Project, project_id, owner)
    versions = db.scalars(select(ModelVersion).where(ModelVersion.project_id == project_id)
                          .order_by(ModelVersion.number.desc())).all()
    return [version_out(v, project) for v in versions]


@router.get("/versions/{version_id}", response_model=VersionOut, tags=["versions"])
def get_version(owner: Reader, version_id: Id, db=Depends(session)):
    version = find(db, ModelVersion, version_id, owner)
    return version_out(version, db.get(Project, version.project_id))


@router.post("/versions/{version_id}/activate", response_model=VersionOut, tags=["versions"])
def activate(owner: Owner, version_id: Id, request: Request, db=Depends(session)):
    """Make this version the one that answers the project's predictions (the folder stays as it is)."""
    version = find(db, ModelVersion, version_id, owner)
    project = db.get(Project, version.project_id)
    project.active_version_id = version.id
    db.commit()
    state(request).forget(project.id)
    return version_out(version, project)


@router.get("/versions/{version_id}/download", tags=["versions"], responses={200: {"content": {"application/zip": {}}}})
def download(owner: Reader, version_id: Id, request: Request, db=Depends(session)):
    """The model folder as a zip: unzip it and use it with `smalldata predict` or `smalldata serve --model`."""
    version = find(db, ModelVersion, version_id, owner)
    folder = state(request).data_dir / version.folder
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, f"model-v{version.number}/{file.name}")
    name = f"project{version.project_id}-model-v{version.number}.zip"
    return Response(buffer.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


# Not `response_class=HTMLResponse`: that would describe the JSON error answers as HTML, too.
@router.get("/versions/{version_id}/report", tags=["versions"],
            responses={200: {"content": {"text/html": {}}, "description": "the HTML report (404 until it is written)"}})
def report(owner: Reader, version_id: Id, request: Request, db=Depends(session)):
    version = find(db, ModelVersion, version_id, owner)
    if version.report is None:
        raise HTTPException(404, "the report of this version is not written yet: try again in a moment")
    path = state(request).data_dir / "reports" / FilePath(version.report).name
    return HTMLResponse(path.read_text(encoding="utf-8"))


def version_out(version: ModelVersion, project: Project) -> VersionOut:
    return VersionOut(id=version.id, project_id=version.project_id, number=version.number, job_id=version.job_id,
                      active=project.active_version_id == version.id, summary=version.summary,
                      accuracy_interval=accuracy_interval(version.summary), findings=version.findings,
                      changes=version.changes, report_ready=version.report is not None, created=version.created)


def accuracy_interval(summary: dict) -> AccuracyInterval | None:
    found = versions.accuracy_interval(summary)
    return AccuracyInterval(**found) if found else None


# ------------------------------------------------------------------------------------ predict

@router.post("/projects/{project_id}/predict/images", response_model=Predictions, tags=["predict"],
             responses=errors(409, 413, 415))
def predict_images(owner: Owner, project_id: Id, request: Request, files: list[UploadFile] = File(...),
                   threshold: Threshold = None, unknown: UnknownFloor = True):
    """Label one or more images (multipart `files`) with the project's active version; `unknown`
    where the top class's probability is below `threshold` (query), or where the input is less
    familiar than the model's floor for inputs of no known class (unless `unknown=false`)."""
    service = state(request)
    version_id, predictor = active_predictor(service, project_id, "image", owner)
    cut_off = predictor.model.cut_off(threshold, unknown=unknown)
    return predictions(version_id, predict_uploads(service, predictor, files, cut_off), cut_off)


@router.post("/projects/{project_id}/predict/texts", response_model=Predictions, tags=["predict"],
             responses=errors(409, 413))
async def predict_texts(owner: Owner, project_id: Id, body: PredictTexts, request: Request):
    """Label one or more texts with the project's active version."""
    service = state(request)
    found = service.active.get(project_id)
    if found is not None and found[2:] == ("text", owner):  # the common case: no thread hand-over
        version_id, predictor = found[:2]
    else:
        version_id, predictor = await run_in_threadpool(active_predictor, service, project_id, "text", owner)
    texts = check_batch(service, body.texts)
    cut_off = predictor.model.cut_off(body.threshold, unknown=body.unknown)
    return predictions(version_id, answers(predictor.model, await predictor.texts_async(texts), cut_off), cut_off)


def predictions(version_id: int | None, answered: list[dict], cut_off: CutOff) -> Predictions:
    """The response to a prediction request: the answers, and the cut-offs they were given at."""
    return Predictions(version_id=version_id, predictions=answered, cut_off=cut_off.probability,
                       familiarity_floor=cut_off.familiarity)


def active_predictor(service, project_id: int, modality: str, owner: str):
    """(version id, predictor) of the project's active version. Kept in memory, with the project's
    modality and owner, until a version is added or activated (`ServiceState.forget`)."""
    found = service.active.get(project_id)
    if found is None:
        with service.sessions() as db:
            project = find(db, Project, project_id, None)
            if project.active_version_id is None:
                found = (None, None, project.modality, project.owner)
            else:
                version = db.get(ModelVersion, project.active_version_id)
                found = (version.id, service.predictors.get(service.data_dir / version.folder), project.modality,
                         project.owner)
                service.active[project_id] = found
    if found[3] != owner:
        raise HTTPException(404, f"no project {project_id}")
    if found[2] != modality:
        raise HTTPException(422, f"project {project_id} holds {found[2]}s, not {modality}s")
    if found[0] is None:
        raise HTTPException(409, "this project has no trained model yet: add examples and train first")
    return found[:2]


def predict_uploads(service, predictor, files: list[UploadFile], cut_off: CutOff = CutOff()) -> list[dict]:
    if len(files) > service.limits.max_predict_batch:
        raise UploadError(413, f"{len(files)} images in one request, more than the {service.limits.max_predict_batch} allowed")
    images = []
    for upload in files:
        data = upload.file.read(service.limits.max_file_bytes + 1)
        try:
            check_image(data, service.limits)
        except UploadError as error:
            raise UploadError(error.status, f"{display_name(upload.filename)}: {error.message}") from error
        images.append(data)
    return answers(predictor.model, predictor.images(images), cut_off)


def predict_strings(service, predictor, texts: list[str], cut_off: CutOff = CutOff()) -> list[dict]:
    return answers(predictor.model, predictor.texts(check_batch(service, texts)), cut_off)


def check_batch(service, texts: list[str]) -> list[str]:
    if len(texts) > service.limits.max_predict_batch:
        raise UploadError(413, f"{len(texts)} texts in one request, more than the {service.limits.max_predict_batch} allowed")
    return [check_text(t, service.limits) for t in texts]


# ------------------------------------------------------------------------------------ helpers

def find(db, table, row_id: int, owner: str | None, *, modality: str | None = None):
    """The row, if it is there and its project belongs to `owner` (None: to anyone); a row of
    another owner's project is answered as one that is not there."""
    row = db.get(table, row_id)
    what = table.__name__.replace("ModelVersion", "model version").replace("UnlabeledExample", "unlabeled example").lower()
    project = row if table is Project or row is None else db.get(Project, row.project_id)
    if row is None or (owner is not None and project.owner != owner):
        raise HTTPException(404, f"no {what} {row_id}")
    if modality is not None and row.modality != modality:
        raise HTTPException(422, f"project {row_id} holds {row.modality}s, not {modality}s")
    return row


def image_type(data: bytes) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return Image.MIME.get(image.format, "application/octet-stream")

