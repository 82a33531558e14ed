"""Every endpoint, and every kind of bad input, against SQLite and a real PostgreSQL server."""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.service.conftest import fresh_database, png_bytes, start_service


def folder_digest(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# --------------------------------------------------------------------------- keys and basics

def test_health_and_openapi_describe_every_endpoint(service):
    assert service.client.get("/api/health").json() == {"status": "ok", "mode": "projects", "keys_needed": True}
    paths = service.client.get("/openapi.json").json()["paths"]
    for path in ("/api/projects", "/api/projects/{project_id}/examples/images", "/api/projects/{project_id}/examples/zip",
                 "/api/projects/{project_id}/examples/csv", "/api/projects/{project_id}/examples/texts",
                 "/api/examples/{example_id}", "/api/projects/{project_id}/jobs", "/api/jobs/{job_id}/cancel",
                 "/api/versions/{version_id}/activate", "/api/versions/{version_id}/download",
                 "/api/projects/{project_id}/predict/images", "/api/projects/{project_id}/predict/texts"):
        assert path in paths
    # The API pages load their scripts from this server, never from a CDN (the browser test renders them offline).
    for docs in ("/docs", "/redoc"):
        html = service.client.get(docs)
        assert html.status_code == 200 and "default-src 'self'" in html.headers["content-security-policy"]
        scripts = re.findall(r'src="([^"]+)"', html.text)
        assert scripts and all(src.startswith("/docs-assets/") for src in scripts), scripts
        assert all(service.client.get(src).status_code == 200 for src in scripts)
    assert service.client.get("/static/favicon.svg").headers["content-type"].startswith("image/svg+xml")
    page = service.client.get("/")
    assert page.status_code == 200 and "<title>smalldata</title>" in page.text
    assert service.client.get("/static/app.js").status_code == 200


def test_writes_and_predictions_need_a_known_key(service, text_project):
    body = {"name": "x", "modality": "text"}
    missing = service.anonymous.post("/api/projects", json=body)
    assert missing.status_code == 401 and "api-key create" in missing.json()["detail"]
    assert service.anonymous.post("/api/projects", json=body, headers={"X-API-Key": "sd_wrong"}).status_code == 403
    bearer = service.anonymous.post("/api/projects", json=body, headers={"Authorization": f"Bearer {service.key}"})
    assert bearer.status_code == 201
    predict = f"/api/projects/{text_project['id']}/predict/texts"
    assert service.anonymous.post(predict, json={"texts": ["rain"]}).status_code == 401
    assert service.anonymous.get("/api/projects").status_code == 401  # reads need a key too
    assert service.anonymous.get(f"/api/projects/{text_project['id']}/examples").status_code == 401


def test_a_key_reaches_only_its_owners_projects(service, text_project, monkeypatch):
    from smalldata.service import auth

    other = {"X-API-Key": auth.create_key(service.state.sessions, "someone else", "mallory")}
    teammate = {"X-API-Key": auth.create_key(service.state.sessions, "same team", "tests")}
    pid = text_project["id"]
    example = service.client.get(f"/api/projects/{pid}/examples").json()[0]
    version = service.client.get(f"/api/projects/{pid}/versions").json()[0]
    job = service.client.get(f"/api/projects/{pid}/jobs").json()[0]
    assert pid not in [p["id"] for p in service.anonymous.get("/api/projects", headers=other).json()]
    for path in (f"/api/projects/{pid}", f"/api/projects/{pid}/examples", f"/api/examples/{example['id']}",
                 f"/api/examples/{example['id']}/content", f"/api/jobs/{job['id']}", f"/api/versions/{version['id']}",
                 f"/api/versions/{version['id']}/download", f"/api/versions/{version['id']}/report"):
        assert service.anonymous.get(path, headers=other).status_code == 404, path  # as if it were not there
        assert service.anonymous.get(path, headers=teammate).status_code == 200, path
    assert service.anonymous.patch(f"/api/examples/{example['id']}", json={"label": "x"}, headers=other).status_code == 404
    assert service.anonymous.delete(f"/api/examples/{example['id']}", headers=other).status_code == 404
    assert service.anonymous.post(f"/api/projects/{pid}/jobs", headers=other).status_code == 404
    assert service.anonymous.post(f"/api/projects/{pid}/predict/texts", json={"texts": ["rain"]}, headers=other).status_code == 404
    assert service.client.get(f"/api/examples/{example['id']}").json()["label"] == example["label"]  # untouched
    # Revoked: refused once the service looks the key up again.
    monkeypatch.setattr(auth, "KEY_RECHECK_S", 0.0)
    assert service.anonymous.get("/api/projects", headers=teammate).status_code == 200
    revoked = next(k for k in auth.list_keys(service.state.sessions) if k.name == "same team")
    auth.revoke(service.state.sessions, revoked.id)
    refused = service.anonymous.get("/api/projects", headers=teammate)
    assert refused.status_code == 403 and "revoked" in refused.json()["detail"]


def test_public_read_is_an_explicit_choice(tmp_path, backend, request):
    db = None if backend is None else fresh_database(request.getfixturevalue("postgres_server"))
    public = start_service(tmp_path, db, start_worker=False, public_read=True)
    try:
        pid = public.post("/api/projects", json={"name": "open", "modality": "text"}).json()["id"]
        assert public.anonymous.get(f"/api/projects/{pid}").status_code == 200
        assert public.anonymous.get("/api/projects").json()[0]["id"] == pid
        assert public.anonymous.post("/api/projects", json={"name": "x", "modality": "text"}).status_code == 401
        assert public.anonymous.post(f"/api/projects/{pid}/examples/texts",
                                     json={"examples": [{"text": "a", "label": "b"}]}).status_code == 401
    finally:
        public.client.__exit__(None, None, None)


def test_project_create_list_get_and_bad_input(service):
    made = service.post("/api/projects", json={"name": "  flowers ", "modality": "image"})
    assert made.status_code == 201
    project = made.json()
    assert project["name"] == "flowers" and project["n_examples"] == 0 and project["active_version"] is None
    assert "at least 2 classes" in project["problems"][0]
    assert project["id"] in [p["id"] for p in service.client.get("/api/projects").json()]
    assert service.client.get(f"/api/projects/{project['id']}").json()["name"] == "flowers"
    assert service.post("/api/projects", json={"name": "x", "modality": "audio"}).status_code == 422
    assert service.post("/api/projects", json={"name": "\n", "modality": "text"}).status_code == 422
    assert service.post("/api/projects", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 422
    assert service.client.get("/api/projects/999999").status_code == 404
    assert service.client.get("/api/projects/abc").status_code == 422
    assert service.client.get("/api/projects/99999999999999999999999").status_code == 422


def test_a_project_has_a_training_budget_the_clis_by_default(service):
    from smalldata.deadline import DEFAULT_BUDGET, parse_budget

    plain = service.post("/api/projects", json={"name": "plain", "modality": "text"}).json()
    assert plain["budget_s"] == parse_budget(DEFAULT_BUDGET) and plain["budget_is_default"]
    quick = service.post("/api/projects", json={"name": "quick", "modality": "text", "budget": "90s"}).json()
    assert quick["budget_s"] == 90 and not quick["budget_is_default"]
    changed = service.client.patch(f"/api/projects/{quick['id']}", json={"budget": 0})
    assert changed.status_code == 200 and changed.json()["budget_s"] == 0 and changed.json()["name"] == "quick"
    renamed = service.client.patch(f"/api/projects/{quick['id']}", json={"name": "  fast "}).json()
    assert renamed["name"] == "fast" and renamed["budget_s"] == 0  # what a PATCH leaves out stays
    for bad in ("soon", -5, "25h", "1e9", "", [1]):
        refused = service.client.patch(f"/api/projects/{quick['id']}", json={"budget": bad})
        assert refused.status_code == 422, (bad, refused.text)
        assert service.post("/api/projects", json={"name": "x", "modality": "text", "budget": bad}).status_code == 422
    assert service.client.patch(f"/api/projects/{quick['id']}", content=b'{"budget": NaN}',
                                headers={"Content-Type": "application/json"}).status_code == 422
    assert service.client.get(f"/api/projects/{quick['id']}").json()["budget_s"] == 0  # nothing stored changed
    assert service.client.patch(f"/api/projects/{quick['id']}", json={"name": "\n"}).status_code == 422
    assert service.anonymous.patch(f"/api/projects/{quick['id']}", json={"budget": "1m"}).status_code == 401


# ------------------------------------------------------------------------------- text examples

def test_text_examples_add_list_relabel_delete(service):
    pid = service.post("/api/projects", json={"name": "t", "modality": "text"}).json()["id"]
    added = service.post(f"/api/projects/{pid}/examples/texts", json={"examples": [
        {"text": "Goal!", "label": "sport"}, {"text": "Add salt", "label": "cooking"}, {"text": "Goal!", "label": "x"}]})
    assert added.status_code == 201
    body = added.json()
    assert len(body["added"]) == 2 and "already in the project" in body["rejected"][0]["reason"]
    listed = service.client.get(f"/api/projects/{pid}/examples").json()
    assert [e["text"] for e in listed] == ["Goal!", "Add salt"]
    assert service.client.get(f"/api/projects/{pid}/examples", params={"label": "sport"}).json()[0]["text"] == "Goal!"
    first = listed[0]["id"]
    assert service.client.patch(f"/api/examples/{first}", json={"label": "football"},
                                headers=service.headers).json()["label"] == "football"
    assert service.client.get(f"/api/examples/{first}/content").text == "Goal!"
    assert service.client.patch(f"/api/examples/{first}", json={"label": "a\x00b"}, headers=service.headers).status_code == 422
    assert service.client.patch(f"/api/examples/{first}", json={"label": "x" * 101}, headers=service.headers).status_code == 422
    assert service.client.delete(f"/api/examples/{first}", headers=service.headers).status_code == 204
    assert service.client.get(f"/api/examples/{first}").status_code == 404
    assert service.client.delete(f"/api/examples/{first}", headers=service.headers).status_code == 404
    counts = service.client.get(f"/api/projects/{pid}").json()["counts"]
    assert counts == {"cooking": 1}


def test_bad_csv_and_text_inputs_get_clear_4xx(service):
    pid = service.post("/api/projects", json={"name": "t", "modality": "text"}).json()["id"]
    csv = f"/api/projects/{pid}/examples/csv"
    binary = service.post(csv, files={"file": ("a.csv", b"\x89PNG\x00\x00\xff\xfe", "text/csv")})
    assert binary.status_code == 415
    no_header = service.post(csv, files={"file": ("a.csv", b"words,more\nhello,there\n", "text/csv")})
    assert no_header.status_code == 422 and "'text' and 'label'" in no_header.json()["detail"]
    rows = "text,label\n" + "".join(f"t{i},a\n" for i in range(101))
    assert service.post(csv, files={"file": ("a.csv", rows.encode(), "text/csv")}).status_code == 413
    partial = service.post(csv, files={"file": ("a.csv", b"text,label\nfine,a\n,b\nno label,\n" + b"x" * 600 + b",a\n", "text/csv")})
    assert partial.status_code == 201
    reasons = [r["reason"] for r in partial.json()["rejected"]]
    assert len(partial.json()["added"]) == 1 and len(reasons) == 3 and any("longer than 500" in r for r in reasons)
    texts = f"/api/projects/{pid}/examples/texts"
    assert service.post(texts, json={"examples": []}).status_code == 422
    assert service.post(texts, json={"examples": [{"text": "x" * 501, "label": "a"}]}).status_code == 413
    assert service.post(texts, json={"wrong": 1}).status_code == 422
    assert service.post(csv).status_code == 422  # no file at all
    images = service.post(f"/api/projects/{pid}/examples/images", data={"label": "a"},
                          files={"files": ("a.png", b"x", "image/png")})
    assert images.status_code == 422 and "holds texts" in images.json()["detail"]


# ------------------------------------------------------------------------------ image examples

def test_images_are_checked_by_content_not_by_name(service, fashion_pngs):
    from PIL import Image

    pid = service.post("/api/projects", json={"name": "clothes", "modality": "image"}).json()["id"]
    url = f"/api/projects/{pid}/examples/images"
    files = [("files", (f"t{i}.png", data, "image/png")) for i, data in enumerate(fashion_pngs["trouser"][:3])]
    files += [("files", ("fake.png", b"this is text, not a PNG", "image/png")),
              ("files", ("empty.jpg", b"", "image/jpeg")),
              ("files", ("truncated.png", fashion_pngs["bag"][0][:200], "image/png")),
              ("files", ("../../etc/passwd.png", png_bytes(Image.new("RGB", (8, 8), "red")), "image/png"))]
    result = service.post(url, data={"label": "trouser"}, files=files)
    assert result.status_code == 201, result.text
    body = result.json()
    assert len(body["added"]) == 4 and body["added"][3]["filename"] == "passwd.png"
    reasons = {r["name"]: r["reason"] for r in body["rejected"]}
    assert "not a readable image" in reasons["fake.png"] and reasons["empty.jpg"] == "the file is empty"
    assert "not a readable image" in reasons["truncated.png"]
    # stored by content hash, never under a name from the request
    stored = [p.name for p in (service.state.data_dir / "blobs").rglob("*") if p.is_file()]
    assert stored and all(len(name) == 64 for name in stored) and "passwd.png" not in stored
    content = service.client.get(f"/api/examples/{body['added'][0]['id']}/content")
    assert content.headers["content-type"] == "image/png" and content.content == fashion_pngs["trouser"][0]
    assert service.post(url, data={"label": " "}, files=files[:1]).status_code == 422
    too_many = [("files", (f"{i}.png", b"x", "image/png")) for i in range(41)]
    assert service.post(url, data={"label": "a"}, files=too_many).status_code == 413
    assert service.post(url, data={"label": "a"}).status_code == 422  # no files


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bombs_and_oversized_bodies_are_refused(service, text_project):
    pid = service.post("/api/projects", json={"name": "bombs", "modality": "image"}).json()["id"]
    url = f"/api/projects/{pid}/examples/images"
    for width, height in ((5000, 5000), (100_000, 100_000)):  # over our limit; over Pillow's own bomb limit
        result = service.post(url, data={"label": "a"}, files={"files": ("b.png", _png_header_claiming(width, height), "image/png")})
        assert result.status_code == 422 and "nothing was added" in result.json()["detail"]  # not a 201 that added nothing
        assert "pixels" in result.json()["detail"] or "bomb" in result.json()["detail"]
    body = service.post(url, data={"label": "a"}, files={"files": ("big.png", os.urandom(3 * 2**20), "image/png")})
    assert body.status_code == 413 and "larger than 2 MiB" in body.json()["detail"]
    long = service.post(f"/api/projects/{text_project['id']}/predict/texts", json={"texts": ["x" * 3 * 2**20]})
    assert long.status_code == 413 and long.headers["content-type"] == "application/json"
    # Even where no key was sent (the 401 comes first) and no length declared, the 413 is JSON.
    unkeyed = service.anonymous.post(url, data={"label": "a"}, files={"files": ("big.png", os.urandom(3 * 2**20), "image/png")})
    assert unkeyed.status_code == 413 and "detail" in unkeyed.json()

    def chunks():
        for _ in range(3):
            yield os.urandom(2**20)

    streamed = service.post(f"/api/projects/{text_project['id']}/predict/texts", content=chunks(),
                            headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and "detail" in streamed.json()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_zip_of_class_folders_and_unsafe_or_bomb_zips(service, fashion_pngs):
    pid = service.post("/api/projects", json={"name": "zip", "modality": "image"}).json()["id"]
    url = f"/api/projects/{pid}/examples/zip"
    good = _zip({"clothes/bag/1.png": fashion_pngs["bag"][0], "clothes/bag/2.png": fashion_pngs["bag"][1],
                 "clothes/sneaker/1.png": fashion_pngs["sneaker"][0], "__MACOSX/bag/._1.png": b"junk",
                 "loose.png": fashion_pngs["bag"][2], "clothes/sneaker/notes.txt": b"hello"})
    result = service.post(url, files={"file": ("c.zip", good, "application/zip")})
    assert result.status_code == 201, result.text
    assert sorted(e["label"] for e in result.json()["added"]) == ["bag", "bag", "sneaker"]
    assert {r["name"] for r in result.json()["rejected"]} == {"loose.png", "clothes/sneaker/notes.txt"}
    unsafe = _zip({"../bag/1.png": fashion_pngs["bag"][3]})
    assert service.post(url, files={"file": ("u.zip", unsafe, "application/zip")}).status_code == 422
    absolute = _zip({"/tmp/bag/1.png": fashion_pngs["bag"][3]})
    assert service.post(url, files={"file": ("a.zip", absolute, "application/zip")}).status_code == 422
    buffer = io.BytesIO()  # 5 MiB of zeros compress to a few KB: over the 4 MiB unpacked limit
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bag/zeros.png", b"\x00" * 5 * 2**20)
    bomb = service.post(url, files={"file": ("bomb.zip", buffer.getvalue(), "application/zip")})
    assert bomb.status_code == 413 and "unpacks to more" in bomb.json()["detail"]
    many = _zip({f"bag/{i}.png": b"x" for i in range(41)})
    assert service.post(url, files={"file": ("m.zip", many, "application/zip")}).status_code == 413
    assert service.post(url, files={"file": ("n.zip", b"PK not really", "application/zip")}).status_code == 415


# ------------------------------------------------------------------ what the database cannot hold, and races

def test_values_the_database_cannot_hold_are_a_422(service):
    pid = service.post("/api/projects", json={"name": "bounds", "modality": "text"}).json()["id"]
    for path in (f"/api/projects/{2**31}", f"/api/examples/{2**40}", f"/api/jobs/{2**53}"):
        assert service.client.get(path).status_code == 422
    assert service.client.get(f"/api/projects/{2**31 - 1}").status_code == 404
    examples = f"/api/projects/{pid}/examples"
    assert service.client.get(examples, params={"offset": 2**63}).status_code == 422
    assert service.client.get(examples, params={"offset": 2**31 - 1}).json() == []
    assert service.client.get(examples, params={"label": "a\x00b"}).status_code == 422
    texts = service.post(f"/api/projects/{pid}/examples/texts", json={"examples": [{"text": "a\x00b", "label": "x"}]})
    assert texts.status_code == 422 and "NUL" in texts.json()["detail"]


def test_zip_member_names_are_shown_clean_and_stored_short(service, fashion_pngs):
    pid = service.post("/api/projects", json={"name": "names", "modality": "image"}).json()["id"]
    long_name = "x" * 300 + ".png"
    archive = _zip({f"bag/{long_name}": fashion_pngs["bag"][0], "sneaker/a\nb\x1b[31m.png": fashion_pngs["sneaker"][0],
                    "top\nlevel.png": fashion_pngs["bag"][1]})
    result = service.post(f"/api/projects/{pid}/examples/zip", files={"file": ("n.zip", archive, "application/zip")})
    assert result.status_code == 201, result.text
    names = sorted(e["filename"] for e in result.json()["added"])
    assert all(len(n) <= 255 and n.isprintable() for n in names) and "ab[31m.png" in names
    assert all(r["name"].isprintable() for r in result.json()["rejected"])


def test_timestamps_say_their_time_zone(service):
    project = service.post("/api/projects", json={"name": "clock", "modality": "text"}).json()
    assert project["created"].endswith(("Z", "+00:00"))


def test_deleted_ids_are_never_given_again(service):
    pid = service.post("/api/projects", json={"name": "ids", "modality": "text"}).json()["id"]
    first = service.post(f"/api/projects/{pid}/examples/texts", json={"examples": [{"text": "one", "label": "a"}]})
    first_id = first.json()["added"][0]["id"]
    assert service.client.delete(f"/api/examples/{first_id}", headers=service.headers).status_code == 204
    second = service.post(f"/api/projects/{pid}/examples/texts", json={"examples": [{"text": "two", "label": "a"}]})
    assert second.json()["added"][0]["id"] > first_id  # a kept link to the deleted one never reaches another


def test_uploads_that_add_nothing_say_so(service):
    pid = service.post("/api/projects", json={"name": "nothing", "modality": "text"}).json()["id"]
    url = f"/api/projects/{pid}/examples/texts"
    assert service.post(url, json={"examples": [{"text": "once", "label": "a"}]}).status_code == 201
    again = service.post(url, json={"examples": [{"text": "once", "label": "a"}]})
    assert again.status_code == 200 and again.json()["added"] == []  # nothing new: not "201 Created"
    assert "already in the project" in again.json()["rejected"][0]["reason"]
    csv = b"text,label\n,a\nb,\n"
    empty = service.post(f"/api/projects/{pid}/examples/csv", files={"file": ("e.csv", csv, "text/csv")})
    assert empty.status_code == 422 and "nothing was added" in empty.json()["detail"]


def test_concurrent_identical_uploads_add_once_and_never_fail(service):
    from concurrent.futures import ThreadPoolExecutor

    pid = service.post("/api/projects", json={"name": "race", "modality": "text"}).json()["id"]
    body = {"examples": [{"text": f"the same text {i}", "label": "a"} for i in range(5)]}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: service.post(f"/api/projects/{pid}/examples/texts", json=body), range(8)))
    assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
    assert sum(len(a.json()["added"]) for a in answers) == 5
    assert service.client.get(f"/api/projects/{pid}").json()["n_examples"] == 5


def test_concurrent_training_requests_start_one_job(service):
    from concurrent.futures import ThreadPoolExecutor

    pid = service.post("/api/projects", json={"name": "twice", "modality": "text"}).json()["id"]
    service.post(f"/api/projects/{pid}/examples/csv", files={"file": ("t.csv", (DATA / "topics.csv").read_bytes(), "text/csv")})
    runner = service.state.runner
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: service.post(f"/api/projects/{pid}/jobs"), range(6)))
    assert sorted(a.status_code for a in answers) == [202] + [409] * 5
    job = next(a.json() for a in answers if a.status_code == 202)
    runner.cancel(job["id"])
    assert service.wait(job["id"])["state"] in ("cancelled", "succeeded")


def test_a_full_disk_is_a_507_and_leaves_nothing_behind(service, fashion_pngs, monkeypatch):
    import errno
    from pathlib import Path as P

    pid = service.post("/api/projects", json={"name": "full", "modality": "image"}).json()["id"]
    real_write = P.write_bytes

    def full(path, data):
        real_write(path, data[:10])  # a part written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(P, "write_bytes", full)
    answer = service.post(f"/api/projects/{pid}/examples/images", data={"label": "bag"},
                          files={"files": ("b.png", fashion_pngs["bag"][7], "image/png")})
    monkeypatch.undo()
    assert answer.status_code == 507 and "disk is full" in answer.json()["detail"]
    assert not list((service.state.data_dir / "blobs").rglob("*.partial"))
    assert service.client.get(f"/api/projects/{pid}").json()["n_examples"] == 0


# ------------------------------------------------------------------------ training and versions

def test_training_refuses_what_cannot_be_trained(service):
    pid = service.post("/api/projects", json={"name": "small", "modality": "text"}).json()["id"]
    assert service.post(f"/api/projects/{pid}/jobs").status_code == 422  # no examples
    service.post(f"/api/projects/{pid}/examples/texts", json={"examples": [
        {"text": "a", "label": "x"}, {"text": "b", "label": "x"}, {"text": "c", "label": "y"}]})
    refused = service.post(f"/api/projects/{pid}/jobs")
    assert refused.status_code == 422 and "at least 2" in refused.json()["detail"]
    no_model = service.post(f"/api/projects/{pid}/predict/texts", json={"texts": ["a"]})
    assert no_model.status_code == 409 and "train first" in no_model.json()["detail"]


def test_trained_project_predicts_and_shows_its_result(service, text_project):
    pid = text_project["id"]
    project = service.client.get(f"/api/projects/{pid}").json()
    version = project["active_version"]
    summary = version["summary"]
    assert summary["n_examples"] == 24 and summary["baseline"]["name"].startswith("baseline")
    assert 0 <= summary["accuracy"]["std"] and summary["accuracy"]["mean"] >= 0.8
    assert len(summary["confusion"]) == 3 and sum(map(sum, summary["confusion"])) == 24
    # The same automatic choice as `smalldata train` with its default budget: it decided on fine-tuning.
    assert project["latest_job"]["budget_s"] == 180 and "reason" in summary["fine_tuning"]
    # The accuracy's interval counts the 24 out-of-fold answers: wide, never a point.
    interval = version["accuracy_interval"]
    assert interval["n"] == 24 and interval["correct"] == sum(summary["confusion"][i][i] for i in range(3))
    assert 0.5 < interval["low"] < interval["accuracy"] <= interval["high"] <= 1 and interval["high"] - interval["low"] > 0.05
    assert version["report_ready"] and set(version["findings"]) >= {"outliers", "near_duplicates", "label_issues"}
    curve = version["findings"]["learning_curve"]  # drawn after serving, with the report
    assert "per class" in curve["summary"] and len(curve["points"]) >= 3 and curve["of"].startswith("logistic-regression")
    report = service.client.get(f"/api/versions/{version['id']}/report")
    assert report.status_code == 200 and "<html" in report.text.lower()
    texts = ["The referee showed a red card to the defender.", "Stir in the flour and butter.",
             "Expect drizzle and grey skies all day."]
    answer = service.post(f"/api/projects/{pid}/predict/texts", json={"texts": texts})
    assert answer.status_code == 200
    predictions = answer.json()["predictions"]
    assert [p["label"] for p in predictions] == ["sport", "cooking", "weather"]
    assert abs(sum(predictions[0]["probabilities"].values()) - 1) < 1e-3
    assert service.post(f"/api/projects/{pid}/predict/texts", json={"texts": []}).status_code == 422
    assert service.post(f"/api/projects/{pid}/predict/texts", json={"texts": ["  "]}).status_code == 422
    assert service.post(f"/api/projects/{pid}/predict/texts", json={"texts": ["a"] * 9}).status_code == 413
    assert service.post(f"/api/projects/{pid}/predict/images", files={"files": ("a.png", b"x", "image/png")}).status_code == 422


def test_the_accuracy_interval_comes_from_the_out_of_fold_confusion_matrix():
    from smalldata.service.api import accuracy_interval

    all_right = accuracy_interval({"confusion": [[8, 0], [0, 7]]})
    assert (all_right.correct, all_right.n, all_right.high) == (15, 15, 1.0) and 0.78 < all_right.low < 0.81
    assert accuracy_interval({"confusion": [[5, 1], [2, 7]]}).correct == 12
    assert accuracy_interval({}) is None  # a summary without one shows the mean alone


def test_what_changed_matches_examples_by_content_and_knows_when_it_cannot_tell():
    from types import SimpleNamespace

    from smalldata.service.versions import changes, snapshot

    summary = {"confusion": [[3, 1], [0, 4]]}
    before = SimpleNamespace(id=7, number=2, summary=summary, trained_on=snapshot(["k1", "k2", "k3", "k4"], ["a", "a", "b", "b"]))
    after = snapshot(["k2", "k3", "k4", "k5", "k6"], ["b", "b", "a", "a", "b"])  # k1 removed, k2 and k4 moved, k5 and k6 new
    found = changes(before, after)
    assert (found["previous_id"], found["previous_number"], found["examples_known"]) == (7, 2, True)
    assert found["added"] == {"a": 1, "b": 1} and found["removed"] == {"a": 1}
    assert found["relabelled"] == [{"from": "a", "to": "b", "n": 1}, {"from": "b", "to": "a", "n": 1}]
    assert found["accuracy_before"]["correct"] == 7 and found["accuracy_before"]["n"] == 8
    assert changes(None, after) is None  # a first version
    older = SimpleNamespace(id=1, number=1, summary={}, trained_on=None)  # made before versions kept examples
    assert changes(older, after) == {"previous_id": 1, "previous_number": 1, "examples_known": False, "added": {},
                                     "removed": {}, "relabelled": [], "accuracy_before": None}
    with pytest.raises(ValueError, match="2 example keys but 1 labels"):
        snapshot(["k1", "k2"], ["a"])


def test_download_gives_a_model_folder_that_loads(service, text_project, tmp_path):
    from smalldata.model import Model

    version = service.client.get(f"/api/projects/{text_project['id']}/versions").json()[-1]
    download = service.client.get(f"/api/versions/{version['id']}/download")
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(download.content)).extractall(tmp_path)
    model = Model.load(tmp_path / f"model-v{version['number']}")
    assert model.classes == ["cooking", "sport", "weather"] and model.head_name == version["summary"]["chosen"]
    assert service.client.get("/api/versions/424242/download").status_code == 404


def test_retraining_makes_a_new_version_and_keeps_the_old_one(service, text_project):
    pid = text_project["id"]
    first = service.client.get(f"/api/projects/{pid}/versions").json()[-1]
    first_folder = service.state.data_dir / f"models/{pid}/{first['number']}"
    before = folder_digest(first_folder)
    assert first["changes"] is None  # the project's first version
    service.post(f"/api/projects/{pid}/examples/texts", json={"examples": [
        {"text": "Snow is forecast for the hills.", "label": "weather"},
        {"text": "The striker scored twice.", "label": "sport"}]})
    # A relabel and a removal, each undone after the training (later tests count the examples).
    examples = service.client.get(f"/api/projects/{pid}/examples").json()
    moved = next(e for e in examples if e["label"] == "cooking")
    gone = next(e for e in examples if e["label"] == "weather")
    assert service.client.patch(f"/api/examples/{moved['id']}", json={"label": "sport"}, headers=service.headers).status_code == 200
    assert service.client.delete(f"/api/examples/{gone['id']}", headers=service.headers).status_code == 204
    # Budget 0: the fastest run, frozen backbones only, no fine-tuning considered (as `train --budget 0`).
    assert service.client.patch(f"/api/projects/{pid}", json={"budget": "0"}).status_code == 200
    job = service.post(f"/api/projects/{pid}/jobs").json()
    assert job["budget_s"] == 0
    assert service.post(f"/api/projects/{pid}/jobs").status_code == 409  # one job per project at a time
    assert service.wait(job["id"])["state"] == "succeeded"
    service.client.patch(f"/api/projects/{pid}", json={"budget": "3m"})
    service.client.patch(f"/api/examples/{moved['id']}", json={"label": "cooking"}, headers=service.headers)
    service.post(f"/api/projects/{pid}/examples/texts", json={"examples": [{"text": gone["text"], "label": "weather"}]})
    versions = service.client.get(f"/api/projects/{pid}/versions").json()
    assert "budget 0 asks for the frozen backbones only" in versions[0]["summary"]["fine_tuning"]["reason"]
    assert versions[0]["summary"]["unknown"].startswith("unknown: an input whose familiarity")
    assert [v["number"] for v in versions][:2] == [first["number"] + 1, first["number"]]
    assert versions[0]["active"] and versions[0]["summary"]["n_examples"] == 25
    # What changed since the version before: the examples per class, and the accuracy before it.
    changes = versions[0]["changes"]
    assert (changes["previous_id"], changes["previous_number"], changes["examples_known"]) == (first["id"], first["number"], True)
    assert changes["added"] == {"sport": 1, "weather": 1} and changes["removed"] == {"weather": 1}
    assert changes["relabelled"] == [{"from": "cooking", "to": "sport", "n": 1}]
    assert changes["accuracy_before"] == first["accuracy_interval"]
    assert service.client.get(f"/api/versions/{versions[0]['id']}").json()["changes"] == changes
    assert folder_digest(first_folder) == before  # immutable
    again = service.client.post(f"/api/versions/{first['id']}/activate", headers=service.headers)
    assert again.status_code == 200 and again.json()["active"]
    answer = service.post(f"/api/projects/{pid}/predict/texts", json={"texts": ["A sunny day"]}).json()
    assert answer["version_id"] == first["id"]
    service.client.post(f"/api/versions/{versions[0]['id']}/activate", headers=service.headers)
    assert service.anonymous.post(f"/api/versions/{first['id']}/activate").status_code == 401


def test_cancel_stops_the_worker_and_the_next_job_still_runs(service, text_project, backend):
    if backend is not None:
        pytest.skip("the worker does not touch the database: once, on SQLite, is enough")
    pid = text_project["id"]
    old_pid = service.state.runner.worker_pid
    job = service.post(f"/api/projects/{pid}/jobs").json()
    cancelled = service.post(f"/api/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 202
    assert service.wait(job["id"])["state"] == "cancelled"
    assert service.post(f"/api/jobs/{job['id']}/cancel").status_code == 409
    assert service.post("/api/jobs/999999/cancel").status_code == 404
    jobs = service.client.get(f"/api/projects/{pid}/jobs").json()
    assert jobs[0]["id"] == job["id"] and jobs[0]["version_id"] is None
    if service.state.runner.worker_pid != old_pid:  # cancelled while running: a fresh worker replaced it
        assert service.state.runner.worker_pid is not None
        assert group_ends(old_pid)  # and nothing of the old one runs on


def group_ends(pgid: int, within: float = 10.0) -> bool:
    """Whether process group `pgid` is empty within `within` seconds (SIGKILLed processes take a moment)."""
    deadline = time.monotonic() + within
    while process_group(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not process_group(pgid)


def process_group(pgid: int) -> list[int]:
    """The live processes in process group `pgid` (Linux: read from /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_a_worker_crash_fails_the_job_and_loses_nothing(service, text_project, backend):
    if backend is not None:
        pytest.skip("the worker does not touch the database: once, on SQLite, is enough")
    import signal

    pid = text_project["id"]
    versions_before = service.client.get(f"/api/projects/{pid}/versions").json()
    examples_before = service.client.get(f"/api/projects/{pid}/examples").json()
    job = service.post(f"/api/projects/{pid}/jobs").json()
    for _ in range(200):
        if service.client.get(f"/api/jobs/{job['id']}").json()["state"] == "running":
            break
        time.sleep(0.05)
    worker = service.state.runner.worker_pid
    deadline = time.monotonic() + 60
    while len(process_group(worker)) < 2 and time.monotonic() < deadline:  # until it runs fits in processes
        time.sleep(0.05)
    assert len(process_group(worker)) > 1
    os.kill(worker, signal.SIGKILL)
    failed = service.wait(job["id"])
    assert failed["state"] == "failed" and "stopped unexpectedly" in failed["error"]
    assert group_ends(worker)  # no orphaned fit process left behind
    assert service.client.get(f"/api/projects/{pid}/versions").json() == versions_before
    assert service.client.get(f"/api/projects/{pid}/examples").json() == examples_before
    answer = service.post(f"/api/projects/{pid}/predict/texts", json={"texts": ["Rain again"]})
    assert answer.status_code == 200  # the active version still serves


def test_a_leftover_model_folder_is_set_aside_not_a_stuck_job(service, text_project, backend):
    if backend is not None:
        pytest.skip("the runner's folders do not depend on the database: once, on SQLite, is enough")
    pid = text_project["id"]
    number = max(v["number"] for v in service.client.get(f"/api/projects/{pid}/versions").json()) + 1
    leftover = service.state.data_dir / f"models/{pid}/{number}"  # what a crash between rename and commit leaves
    leftover.mkdir(parents=True)
    (leftover / "model.json").write_text("{}")
    job = service.post(f"/api/projects/{pid}/jobs").json()
    finished = service.wait(job["id"], report=False)
    assert finished["state"] == "succeeded", finished
    assert (leftover / "model.json").read_text() != "{}"  # the new version is in its place
    aside = list((service.state.data_dir / "models/.orphaned").iterdir())
    assert any((folder / "model.json").read_text() == "{}" for folder in aside)  # kept, not deleted


def test_an_error_while_recording_fails_the_job_and_the_next_job_runs(service, text_project, backend, monkeypatch):
    if backend is not None:
        pytest.skip("the runner does the same on both databases: once, on SQLite, is enough")
    pid = text_project["id"]
    runner = service.state.runner
    versions_before = [v["id"] for v in service.client.get(f"/api/projects/{pid}/versions").json()]

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner, "_add_version", disk_full)
    job = service.post(f"/api/projects/{pid}/jobs").json()
    failed = service.wait(job["id"], report=False, timeout=180)
    assert failed["state"] == "failed" and "No space left on device" in failed["error"], failed
    assert [v["id"] for v in service.client.get(f"/api/projects/{pid}/versions").json()] == versions_before
    monkeypatch.undo()
    # The next job reads none of the failed job's messages (its worker was replaced) and succeeds.
    job = service.post(f"/api/projects/{pid}/jobs").json()
    assert service.wait(job["id"], report=False)["state"] == "succeeded"


def test_a_message_of_another_job_is_never_taken_for_this_one(service, text_project, backend):
    if backend is not None:
        pytest.skip("the runner does the same on both databases: once, on SQLite, is enough")
    pid = text_project["id"]
    runner = service.state.runner
    # While the runner is idle, hand the worker a bogus job 0: its "failed" answer waits in the pipe.
    runner._conn.send((0, {}))
    time.sleep(1.0)
    job = service.post(f"/api/projects/{pid}/jobs").json()
    finished = service.wait(job["id"], report=False)
    assert finished["state"] == "succeeded", finished  # job 0's answer was dropped, not taken for this job's


def test_a_restart_marks_running_jobs_failed(backend, tmp_path, request):
    from smalldata.service.storage import Job, Project

    db = None if backend is None else fresh_database(request.getfixturevalue("postgres_server"))
    first = start_service(tmp_path, db, start_worker=False)
    with first.state.sessions.begin() as session:
        project = Project(name="p", modality="text", owner="tests")
        session.add(project)
        session.flush()
        job = Job(project_id=project.id, state="running", stage="embedding")
        session.add(job)
        session.flush()
        job_id = job.id
    first.client.__exit__(None, None, None)
    second = start_service(tmp_path, db, start_worker=False)
    job = second.client.get(f"/api/jobs/{job_id}").json()
    assert job["state"] == "failed" and "service stopped" in job["error"]
    second.client.__exit__(None, None, None)


def test_an_unexpected_error_is_json_and_says_nothing_changed(service, monkeypatch):
    from smalldata.service import api

    service.post("/api/projects", json={"name": "listed", "modality": "text"})  # so that the list has one to show

    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "project_out", broken)
    from fastapi.testclient import TestClient

    client = TestClient(service.app, raise_server_exceptions=False, headers=service.headers)
    answer = client.get("/api/projects")
    assert answer.status_code == 500 and "nothing stored was changed" in answer.json()["detail"]


# ------------------------------------------------------------------------- unlabeled examples

UNLABELED = ["The referee showed a red card in the derby.", "Fans cheered as the team lifted the trophy.",
             "Heavy rain and strong winds are expected tomorrow.", "A frost will cover the valleys overnight.",
             "Simmer the onions slowly in butter until golden.", "Knead the dough and let it rise for an hour."]


def test_unlabeled_texts_are_stored_checked_and_learned_from(service, backend):
    project = service.post("/api/projects", json={"name": "pool", "modality": "text"}).json()
    pid = project["id"]
    csv = (DATA / "topics.csv").read_bytes()
    assert service.post(f"/api/projects/{pid}/examples/csv", files={"file": ("t.csv", csv, "text/csv")}).status_code == 201
    labeled_copy = (DATA / "topics.csv").read_text().splitlines()[1].rsplit(",", 1)[0]
    added = service.post(f"/api/projects/{pid}/unlabeled/texts", json={"texts": UNLABELED + [labeled_copy]})
    assert added.status_code == 201, added.text
    assert added.json()["added"] == len(UNLABELED) and added.json()["n_unlabeled"] == len(UNLABELED)
    assert [r["reason"] for r in added.json()["rejected"]] == ["already in the project"]  # a labeled one is never in the pool
    assert service.client.get(f"/api/projects/{pid}").json()["n_unlabeled"] == len(UNLABELED)
    # Bad input: no key, an empty text, images for a text project, no project.
    assert service.anonymous.post(f"/api/projects/{pid}/unlabeled/texts", json={"texts": ["x"]}).status_code == 401
    assert service.post(f"/api/projects/{pid}/unlabeled/texts", json={"texts": ["   "]}).status_code == 422
    assert service.post(f"/api/projects/{pid}/unlabeled/texts", json={"texts": []}).status_code == 422
    wrong = service.post(f"/api/projects/{pid}/unlabeled/images", files=[("files", ("a.png", b"x", "image/png"))])
    assert 400 <= wrong.status_code < 500
    assert service.post("/api/projects/9999/unlabeled/texts", json={"texts": ["x"]}).status_code == 404
    if backend is None:  # training is the same on both databases; once is enough for the suite's time
        job = service.post(f"/api/projects/{pid}/jobs").json()
        assert service.wait(job["id"], report=False)["state"] == "succeeded"
        summary = service.client.get(f"/api/projects/{pid}").json()["active_version"]["summary"]
        assert summary["n_unlabeled"] == len(UNLABELED)
        assert any("self-training" in name for name in summary["contributions"])
        # Label these next: the ranking of `smalldata suggest`, by unlabeled id, after the report.
        version = service.client.get(f"/api/projects/{pid}/versions").json()[0]
        for _ in range(600):
            if version["report_ready"]:
                break
            time.sleep(0.2)
            version = service.client.get(f"/api/projects/{pid}/versions").json()[0]
        suggested = version["findings"]["suggestions"]
        assert 1 <= len(suggested) <= min(10, len(UNLABELED)), version["findings"]
        first = suggested[0]
        content = service.client.get(f"/api/unlabeled/{first['unlabeled_id']}/content")
        assert content.status_code == 200 and content.text in UNLABELED
        assert service.post(f"/api/unlabeled/{first['unlabeled_id']}/label", json={"label": "  "}).status_code == 422
        assert service.anonymous.post(f"/api/unlabeled/{first['unlabeled_id']}/label", json={"label": "x"}).status_code == 401
        labeled = service.post(f"/api/unlabeled/{first['unlabeled_id']}/label", json={"label": first["predicted_label"]})
        assert labeled.status_code == 201 and labeled.json()["text"] == content.text
        after = service.client.get(f"/api/projects/{pid}").json()
        assert after["n_unlabeled"] == len(UNLABELED) - 1 and after["n_examples"] == 25  # moved, not copied nor lost
        again = service.post(f"/api/unlabeled/{first['unlabeled_id']}/label", json={"label": "sport"})
        assert again.status_code == 404 and "no unlabeled example" in again.json()["detail"]
    assert service.client.delete(f"/api/projects/{pid}/unlabeled", headers=service.headers).status_code == 204
    assert service.client.get(f"/api/projects/{pid}").json()["n_unlabeled"] == 0
    assert service.client.get(f"/api/projects/{pid}").json()["n_examples"] == (24 if backend else 25)  # labeled ones untouched


def test_unlabeled_images_are_checked_by_content(service, fashion_pngs):
    pid = service.post("/api/projects", json={"name": "unsorted", "modality": "image"}).json()["id"]
    files = [("files", (f"u{i}.png", data, "image/png")) for i, data in enumerate(fashion_pngs["bag"][:2])]
    files.append(("files", ("fake.png", b"not an image at all", "image/png")))
    added = service.post(f"/api/projects/{pid}/unlabeled/images", files=files)
    assert added.status_code == 201, added.text
    assert added.json()["added"] == 2 and [r["name"] for r in added.json()["rejected"]] == ["fake.png"]
    again = service.post(f"/api/projects/{pid}/unlabeled/images", files=files[:1]).json()
    assert again["added"] == 0 and again["n_unlabeled"] == 2  # the same content is stored once
