"""Local use without ceremony: a server on loopback with no API key made takes requests from this
machine without one; a key made, another address, a proxy or another client, and keys are needed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from smalldata.cli import app as cli
from smalldata.service import auth, create_app

LOCAL = ("127.0.0.1", 50000)
PROJECT = {"name": "mine", "modality": "text"}


def client(tmp_path, *, loopback_only: bool, at=LOCAL):
    from fastapi.testclient import TestClient

    return TestClient(create_app(tmp_path, loopback_only=loopback_only, start_worker=False), client=at)


def test_on_loopback_with_no_key_made_no_key_is_needed_until_one_is(tmp_path):
    with client(tmp_path, loopback_only=True) as local:
        assert local.get("/api/health").json()["keys_needed"] is False
        made = local.post("/api/projects", json=PROJECT)
        assert made.status_code == 201, made.text
        added = local.post(f"/api/projects/{made.json()['id']}/examples/texts",
                           json={"examples": [{"text": "rain all day", "label": "weather"}]})
        assert added.status_code == 201, added.text
        assert [p["name"] for p in local.get("/api/projects").json()] == ["mine"]
        # A key sent while none exists is no key: the page's snippet, placeholder and all, works.
        assert local.get("/api/projects", headers={"X-API-Key": "YOUR_API_KEY"}).status_code == 200
        # A proxy on this machine passes on requests from elsewhere: those need a key.
        assert local.post("/api/projects", json=PROJECT, headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 401

        sessions = local.app.state.service.sessions
        key = auth.create_key(sessions, "first")  # at once, not after KEY_RECHECK_S
        assert local.get("/api/health").json()["keys_needed"] is True
        assert local.post("/api/projects", json=PROJECT).status_code == 401
        assert local.get("/api/projects").status_code == 401
        assert local.get("/api/projects", headers={"X-API-Key": "YOUR_API_KEY"}).status_code == 403
        # The first key (default owner) sees what was made before it; nothing was lost.
        mine = local.get("/api/projects", headers={"X-API-Key": key}).json()
        assert [(p["name"], p["n_examples"]) for p in mine] == [("mine", 1)]

        # Revoking every key does not open the service again.
        auth.revoke(sessions, auth.list_keys(sessions)[0].id)
        assert local.post("/api/projects", json=PROJECT).status_code == 401
        assert local.get("/api/health").json()["keys_needed"] is True


@pytest.mark.parametrize(("loopback_only", "at"), [(False, LOCAL), (True, ("192.0.2.7", 50000))],
                         ids=["listening-on-another-address", "a-client-from-elsewhere"])
def test_keys_are_needed_off_loopback_even_with_none_made(tmp_path, loopback_only, at):
    with client(tmp_path, loopback_only=loopback_only, at=at) as remote:
        assert remote.get("/api/health").json()["keys_needed"] is True
        refused = remote.post("/api/projects", json=PROJECT)
        assert refused.status_code == 401 and "api-key create" in refused.json()["detail"]
        assert remote.get("/api/projects").status_code == 401


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                                 ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                                 ("::", False), ("192.168.1.20", False), ("example.org", False)])
def test_is_loopback(host, loopback):
    assert auth.is_loopback(host) is loopback


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("0.0.0.0", False)])
def test_serve_tells_the_app_whether_it_listens_on_loopback(tmp_path, monkeypatch, host, loopback):
    import uvicorn

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    result = CliRunner().invoke(cli, ["serve", "--data", str(tmp_path), "--host", host])
    assert result.exit_code == 0, result.output
    assert served["host"] == host and served["app"].state.service.loopback_only is loopback
    assert ("requests from this machine need none" in " ".join(result.output.split())) is loopback
