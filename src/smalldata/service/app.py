"""The app factory: `create_app(data_dir)` for the full service, `create_app(model_dir=DIR)` to serve
one saved model folder read-only (predict only).

The lifespan opens the database, fails jobs a crash left running, starts the training worker, and
stops it again on shutdown. Every error a request can cause is answered as JSON ``{"detail": ...}``
with a 4xx status; only a bug gives a 500.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from smalldata.data import DataError
from smalldata.model import Model, ModelFolderError
from smalldata.service import api, auth
from smalldata.service.blobs import BlobStore, DiskFull
from smalldata.service.body_limit import BodyLimit
from smalldata.service.predictor import Predictor, Predictors
from smalldata.service.schemas import Predictions, PredictTexts
from smalldata.service.storage import (
    database_url,
    fail_interrupted_jobs,
    make_engine,
    session_factory,
)
from smalldata.service.uploads import Limits, UploadError
from smalldata.service.worker import JobRunner

log = logging.getLogger("smalldata.service")
STATIC = resources.files("smalldata.service") / "static"
# Swagger UI (5.x) and ReDoc (2.x) as the fastapi-offline package ships them: FastAPI's own /docs and
# /redoc load them from a CDN, and are blank pages on a machine without the network.
DOC_ASSETS = resources.files("fastapi_offline") / "static"


@dataclass
class ServiceState:
    data_dir: Path
    limits: Limits
    sessions: object = None
    blobs: BlobStore | None = None
    runner: JobRunner | None = None
    predictors: Predictors = field(default_factory=Predictors)
    model: Predictor | None = None  # --model mode: the one model served
    public_read: bool = False  # reads open to anyone without a key: an explicit choice (`serve --public-read`)
    keys: auth.KnownKeys | None = None
    loopback_only: bool = False  # listens on loopback only: no key needed until one is made (`api.keyless`)

    active: dict = field(default_factory=dict)  # project id -> (version id, predictor, modality, owner)

    def forget(self, project_id: int) -> None:
        """The project's active version changed: look it up again on the next prediction."""
        self.active.pop(project_id, None)


def create_app(data_dir: str | Path = "smalldata-data", *, db_url: str | None = None, model_dir: str | Path | None = None,
               limits: Limits = Limits(), start_worker: bool = True, threads: int | None = None,
               public_read: bool = False, loopback_only: bool = False) -> FastAPI:
    """`threads`: how many requests run at once (FastAPI runs plain endpoints in threads; 40 by default).
    `public_read`: anyone may read every project, its examples and models without a key; writes and
    predictions still need one. Off by default: then a key reads only its owner's projects.
    `loopback_only`: the server listens on a loopback address (`smalldata serve` says so): while no API
    key has been made, requests from this machine need none (`api.keyless`).

    A `model_dir` is loaded here, not when the service starts: a damaged folder is a `ModelFolderError`
    to the caller (`smalldata serve` prints it) rather than a failed start."""
    service = ServiceState(Path(data_dir), limits, public_read=public_read, loopback_only=loopback_only)
    model = Model.load(model_dir) if model_dir is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if service.sessions is not None:  # started already (a test client, then a fuzzer, on one app):
            yield                         # a second start would run a second worker beside the first
            return
        if threads:
            import anyio.to_thread

            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        service.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(database_url(service.data_dir, db_url))
        service.sessions = session_factory(engine)
        service.keys = auth.KnownKeys(service.sessions)
        if model is not None:
            service.model = Predictor(model)
            service.model.warm_up()
        else:
            service.blobs = BlobStore(service.data_dir / "blobs")
            failed = fail_interrupted_jobs(service.sessions)
            if failed:
                log.warning("%d training job(s) were running when the service stopped; marked failed", failed)
            service.runner = JobRunner(service.sessions, service.data_dir, service.blobs, on_new_version=service.forget)
            if start_worker:
                service.runner.start()
        try:
            yield
        finally:
            if service.runner is not None and start_worker:
                service.runner.stop()
            engine.dispose()
            service.sessions = None  # stopped: a later start starts afresh

    app = FastAPI(title="smalldata", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Few-shot image and text classification: upload examples, train, predict. "
                              "Every request needs an API key (`smalldata api-key create`) in the `X-API-Key` "
                              "header, and reaches only the projects of the key's owner. Only where the server "
                              "listens on loopback and no key has been made yet do requests from the same machine "
                              "need none (`keys_needed` in /api/health).")
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)
    add_error_handlers(app)
    app.include_router(api.router if model_dir is None else model_router())

    def health(request: Request) -> dict:
        """`keys_needed` false: this server listens on loopback and no API key exists yet, so requests
        from this machine need none (the page says so)."""
        return {"status": "ok", "mode": "model" if model_dir else "projects", "keys_needed": not api.keyless(request)}

    app.add_api_route("/api/health", health, methods=["GET"], tags=["health"])
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_api_route("/", lambda: FileResponse(str(STATIC / "index.html")), methods=["GET"], include_in_schema=False)
    add_offline_docs(app)
    return app


def add_offline_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc from assets served here, so that they render with no network."""
    app.mount("/docs-assets", StaticFiles(directory=str(DOC_ASSETS)), name="docs-assets")
    favicon = "/static/favicon.svg"
    # Nothing but this server: ReDoc shows its maker's logo from a CDN (no option turns it off), which
    # would tell a third party of every visit; blocked, it is not shown. Both pages' loaders are inline
    # scripts, and ReDoc runs its search in a worker made from a blob.
    policy = {"Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                                         "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                                         "worker-src 'self' blob:"}

    def swagger(request: Request):
        root = request.scope.get("root_path", "")
        # validatorUrl None: Swagger UI would otherwise send the description to an online validator.
        page = get_swagger_ui_html(openapi_url=root + app.openapi_url, title="smalldata API",
                                   swagger_js_url=f"{root}/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}/docs-assets/swagger-ui.css",
                                   swagger_favicon_url=root + favicon, swagger_ui_parameters={"validatorUrl": None})
        page.headers.update(policy)
        return page

    def redoc(request: Request):
        root = request.scope.get("root_path", "")
        page = get_redoc_html(openapi_url=root + app.openapi_url, title="smalldata API",
                              redoc_js_url=f"{root}/docs-assets/redoc.standalone.js",
                              redoc_favicon_url=root + favicon, with_google_fonts=False)
        page.headers.update(policy)
        return page

    app.add_api_route("/docs", swagger, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)


def model_router() -> APIRouter:
    """Predict-only routes over the one model folder given with --model."""
    router = APIRouter(prefix="/api", tags=["predict"], responses=api.errors(400, 401, 403, 413, 415, 422))
    keyed = [Depends(api.key_owner)]  # any owner's key: the one model is no project's

    @router.get("/model", dependencies=[Depends(api.reader)])
    def model_info(request: Request):
        model = api.state(request).model.model
        return {"labels": model.classes, "modality": model.modality, "head": model.head_name,
                "features": model.features, "cross_validation": model.comparison.to_dict() if model.comparison else None}

    @router.post("/predict/images", response_model=Predictions, dependencies=keyed)
    def predict_images(request: Request, files: list[UploadFile] = File(...), threshold: api.Threshold = None,
                       unknown: api.UnknownFloor = True):
        service = api.state(request)
        require_modality(service, "image")
        cut_off = service.model.model.cut_off(threshold, unknown=unknown)
        return api.predictions(None, api.predict_uploads(service, service.model, files, cut_off), cut_off)

    @router.post("/predict/texts", response_model=Predictions, dependencies=keyed)
    def predict_texts(body: PredictTexts, request: Request):
        service = api.state(request)
        require_modality(service, "text")
        cut_off = service.model.model.cut_off(body.threshold, unknown=body.unknown)
        return api.predictions(None, api.predict_strings(service, service.model, body.texts, cut_off), cut_off)

    return router


def require_modality(service: ServiceState, modality: str) -> None:
    if service.model.model.modality != modality:
        raise UploadError(422, f"this model classifies {service.model.model.modality}s, not {modality}s")


def add_error_handlers(app: FastAPI) -> None:
    def detail(status: int, message, headers=None) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status, headers=headers)

    @app.exception_handler(UploadError)
    async def upload_error(_request, error: UploadError):
        return detail(error.status, error.message)

    @app.exception_handler(DataError)
    async def data_error(_request, error: DataError):
        return detail(422, str(error))

    @app.exception_handler(DiskFull)
    async def disk_full(_request, _error: DiskFull):
        return detail(507, "the server's disk is full: nothing was added by this request; free some space and try again")

    @app.exception_handler(ModelFolderError)
    async def model_folder_error(_request, error: ModelFolderError):
        return detail(409, str(error))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, error: RequestValidationError):
        # The default answer, without echoing the whole input back (it may be a large upload).
        problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                    for e in error.errors()]
        return detail(422, problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, error: StarletteHTTPException):
        return detail(error.status_code, error.detail, getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_request, error: Exception):
        log.exception("unexpected error", exc_info=error)
        return detail(500, "internal error: the service has a bug; nothing stored was changed by this request")
