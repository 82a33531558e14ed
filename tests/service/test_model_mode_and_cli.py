"""`smalldata serve --model DIR` (read-only, predict only), the ONNX text encoder, and the CLI commands."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from smalldata.cli import app as cli

runner = CliRunner()


@pytest.fixture(scope="module")
def image_model_dir(fashion_folder, tmp_path_factory):
    import smalldata

    model = smalldata.train(smalldata.load_dataset(fashion_folder), evaluate=False)  # no CV: fast
    return model.save(tmp_path_factory.mktemp("image-model") / "model")


@pytest.fixture(scope="module")
def model_service(image_model_dir, tmp_path_factory):
    from tests.service.conftest import start_service

    running = start_service(tmp_path_factory.mktemp("model-mode"), None, model_dir=image_model_dir)
    yield running
    running.client.__exit__(None, None, None)


def test_model_mode_predicts_images_and_nothing_else(model_service, fashion_pngs):
    client = model_service.client
    assert client.get("/api/health").json()["mode"] == "model"
    assert client.get("/api/model").json()["labels"] == ["bag", "sneaker", "trouser"]
    files = [("files", (f"{name}.png", pngs[-1], "image/png")) for name, pngs in fashion_pngs.items()]
    answer = model_service.post("/api/predict/images", files=files)
    assert answer.status_code == 200, answer.text
    assert [p["label"] for p in answer.json()["predictions"]] == list(fashion_pngs)
    unsure = model_service.post("/api/predict/images?threshold=1", files=files).json()
    assert unsure["cut_off"] == 1.0 and {p["label"] for p in unsure["predictions"]} == {"unknown"}
    assert model_service.post("/api/predict/images?threshold=2", files=files).status_code == 422
    assert model_service.anonymous.post("/api/predict/images", files=files).status_code == 401
    assert model_service.anonymous.get("/api/model").status_code == 401
    bad = model_service.post("/api/predict/images", files={"files": ("x.png", b"GIF89a nope", "image/png")})
    assert bad.status_code == 415 and "x.png" in bad.json()["detail"]
    assert model_service.post("/api/predict/texts", json={"texts": ["hi"]}).status_code == 422
    # read-only: no project routes at all
    assert model_service.post("/api/projects", json={"name": "x", "modality": "text"}).status_code in (404, 405)
    assert client.get("/api/projects").status_code == 404
    assert "/api/projects" not in client.get("/openapi.json").json()["paths"]


def test_onnx_text_encoder_gives_the_librarys_vectors():
    from smalldata.backbones import get_backbone
    from smalldata.onnx_text import text_encoder

    backbone = get_backbone("all-MiniLM-L6-v2")
    texts = ["The referee showed a red card.", "a", "Stir in the flour and butter, then bake for twenty minutes. " * 40]
    fast = text_encoder(backbone).embed(texts)
    assert fast.shape == (3, 384)
    assert np.abs(fast - backbone.embed_batch(texts)).max() < 1e-4  # long text: truncated the same way too


def test_api_key_create_prints_a_key_that_the_service_accepts(tmp_path):
    from smalldata.service import auth
    from smalldata.service.storage import database_url, make_engine, session_factory

    result = runner.invoke(cli, ["api-key", "create", "--data", str(tmp_path), "--name", "ci"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[0]
    assert key.startswith("sd_") and len(key) > 40
    engine = make_engine(database_url(tmp_path, None))
    sessions = session_factory(engine)
    assert auth.is_valid(sessions, key) and not auth.is_valid(sessions, key + "x")
    engine.dispose()
    assert key not in (tmp_path / "smalldata.db").read_bytes().decode("latin-1")  # only its hash is stored


def test_serve_refuses_a_folder_that_is_no_model(tmp_path):
    result = runner.invoke(cli, ["serve", "--model", str(tmp_path)])
    assert result.exit_code == 2 and "not a smalldata model folder" in result.output


def test_api_keys_have_owners_and_can_be_listed_and_revoked(tmp_path):
    from smalldata.service import auth
    from smalldata.service.storage import database_url, make_engine, session_factory

    made = runner.invoke(cli, ["api-key", "create", "--data", str(tmp_path), "--owner", "vision-team", "--name", "ci"])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[0]
    listed = runner.invoke(cli, ["api-key", "list", "--data", str(tmp_path)])
    assert listed.exit_code == 0 and "vision-team" in listed.stdout and key not in listed.stdout
    assert runner.invoke(cli, ["api-key", "revoke", "1", "--data", str(tmp_path)]).exit_code == 0
    engine = make_engine(database_url(tmp_path, None))
    assert not auth.is_valid(session_factory(engine), key)
    engine.dispose()
    unknown = runner.invoke(cli, ["api-key", "revoke", "99", "--data", str(tmp_path)])
    assert unknown.exit_code == 2 and "api-key list" in unknown.output
    bad = runner.invoke(cli, ["api-key", "create", "--data", str(tmp_path), "--owner", "a b<script>"])
    assert bad.exit_code == 2 and "cannot name an owner" in bad.output


def test_a_database_made_before_owners_is_brought_up_to_date_and_keeps_everything(tmp_path):
    """A database of the schema before migrations (no alembic_version) gains owners and keeps its rows."""
    import sqlalchemy as sa
    from alembic import command

    from smalldata.service import auth
    from smalldata.service.storage import alembic_config, database_url, make_engine, session_factory

    url = database_url(tmp_path, None)
    old = sa.create_engine(url)
    with old.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
        connection.execute(sa.text("DROP TABLE alembic_version"))  # as the service made it before migrations
        connection.execute(sa.text("INSERT INTO projects (name, modality, created) VALUES ('old', 'text', '2026-01-01')"))
        connection.execute(sa.text("INSERT INTO api_keys (name, digest, created) VALUES ('old', :d, '2026-01-01')"),
                           {"d": auth.digest("sd_old-key")})
        for state in ("running", "queued"):  # two unfinished jobs of one project, as a race could leave
            connection.execute(sa.text("INSERT INTO jobs (project_id, state, stage, done, total, n_examples, created) "
                                       "VALUES (1, :s, '', 0, 0, 0, '2026-01-01')"), {"s": state})
    old.dispose()
    engine = make_engine(url)
    sessions = session_factory(engine)
    assert auth.owner_of(sessions, "sd_old-key") == "default"  # an old key keeps working, for the old projects
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT name, owner FROM projects")).all() == [("old", "default")]
        states = connection.execute(sa.text("SELECT state FROM jobs ORDER BY id")).scalars().all()
    assert states == ["running", "failed"]  # the index of one unfinished job per project could be made
    engine.dispose()


def test_the_service_predicts_what_the_library_predicts(image_model_dir, fashion_test_folder):
    """The service runs the library's Model.predict_proba, only embedding through its batchers."""
    from smalldata.model import Model
    from smalldata.service.predictor import Predictor

    model = Model.load(image_model_dir)
    paths = sorted(fashion_test_folder.rglob("*.png"))[:6]
    served, library = Predictor(model).images([path.read_bytes() for path in paths]), model.scored(paths)
    assert np.allclose(served.proba, library.proba, atol=1e-4)
    # trained without folds, so without familiarity (`test_model` compares a text model's)
    assert served.familiarity is None and library.familiarity is None
