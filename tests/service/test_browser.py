"""The web page in a real browser (Debian's Chromium, driven by Playwright) against a real server on
loopback: create a project, upload images of three classes, train, try a new image."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import httpx2 as httpx
import pytest

from tests.service.conftest import missing

CHROMIUM = "/usr/bin/chromium"
# No sandbox (tests run as root in CI), and nothing that would reach for the network.
# A fake camera (a test pattern) that the page may use without asking, for the camera button.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@contextmanager
def running(data_dir, **options):
    """A real server on loopback, in a thread; yields (url, app)."""
    import uvicorn

    from smalldata.service import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(data_dir, **options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    from smalldata.service import auth

    with running(tmp_path_factory.mktemp("live")) as (url, app):
        yield url, auth.create_key(app.state.service.sessions, "browser test")


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and shutil.which("chromium")):
        missing("Chromium (Debian's chromium package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.mark.slow
def test_create_upload_train_and_try_an_image_in_the_browser(live_server, browser, fashion, fashion_pngs, tmp_path):
    from PIL import Image
    from playwright.sync_api import expect

    from smalldata.demo import CLASSES
    from tests.service.conftest import png_bytes

    url, key = live_server
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    # Before a key: a hint, not an error, and nothing to change yet.
    expect(page.locator("#message")).to_have_class("hint")
    expect(page.locator("#message")).to_contain_text("Enter your API key")
    expect(page.locator("#new-project")).to_be_hidden()
    page.fill("#api-key", key)
    page.click("#key-form button")
    page.fill("#project-name", "clothes")
    page.check("input[name=modality][value=image]")
    page.click("#new-project button")
    expect(page.locator("#project-title")).to_have_text("clothes (images)")
    for label, pngs in fashion_pngs.items():
        page.fill("#image-label", label)
        page.set_input_files("#image-files", [{"name": f"{label}{i}.png", "mimeType": "image/png", "buffer": data}
                                              for i, data in enumerate(pngs[:8])])
        page.click("#add-images button")
        expect(page.locator("#counts")).to_contain_text(label)
    expect(page.locator("#message")).to_contain_text("added 8 examples")
    # A label error planted: a sneaker (none of the fixture's) uploaded as a bag.
    images, labels = fashion
    planted = png_bytes(Image.fromarray(images[(labels == CLASSES.index("sneaker")).nonzero()[0][50]]).convert("RGB"))
    page.fill("#image-label", "bag")
    page.set_input_files("#image-files", {"name": "planted.png", "mimeType": "image/png", "buffer": planted})
    page.click("#add-images button")
    expect(page.locator("#counts tr", has_text="bag")).to_contain_text("9")
    page.click("#train")
    expect(page.locator("#try")).to_be_visible(timeout=180_000)
    expect(page.locator("#accuracy")).to_contain_text("of 25 examples right out of fold")
    expect(page.locator("#accuracy")).to_contain_text("95% interval")
    assert "± 0.0%" not in page.locator("#result").inner_text()
    expect(page.locator("#confusion")).to_contain_text("sneaker")
    page.set_input_files("#try-file", {"name": "new.png", "mimeType": "image/png", "buffer": fashion_pngs["bag"][-1]})
    page.click("#try-image button")
    expect(page.locator("#predicted-label")).to_have_text("bag")
    # A threshold on the page: under it the answer is 'unknown', with the probabilities still shown.
    page.fill("#try-threshold", "1")
    page.click("#try-image button")
    expect(page.locator("#predicted-label")).to_have_text("unknown")
    expect(page.locator("#prediction")).to_contain_text("no class reached probability 1.0000")
    expect(page.locator("#prediction")).to_contain_text("bag")
    page.fill("#try-threshold", "")
    # The snippets on the page work as they are, once the key is put in.
    (tmp_path / "photo.jpg").write_bytes(fashion_pngs["bag"][-1])  # the service reads content, not names
    python = page.locator("#snippet-python").inner_text()
    assert f"{url}/api/projects/" in python and "YOUR_API_KEY" in python
    (tmp_path / "call.py").write_text(python.replace("YOUR_API_KEY", key))
    called = subprocess.run([sys.executable, "call.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert called.returncode == 0 and called.stdout.startswith("bag "), called.stderr
    if shutil.which("curl"):
        curl = page.locator("#snippet-curl").inner_text().replace("YOUR_API_KEY", key)
        called = subprocess.run(["bash", "-c", curl], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
        assert called.returncode == 0 and json.loads(called.stdout)["predictions"][0]["label"] == "bag", called
    expect(page.locator("#report-link a")).to_be_visible(timeout=60_000)
    expect(page.locator("#curve-summary")).to_contain_text("more examples per class")
    expect(page.locator("#curve-plot svg circle")).not_to_have_count(0)
    # The planted error is suspected, and one click gives it the class the model suggests.
    suspect = page.locator("#findings figure", has_text="labeled bag, looks like sneaker (suspected label error)")
    expect(suspect.first).to_be_visible()
    suspect.first.locator("button.suggested").click()
    expect(page.locator("#message")).to_contain_text("relabeled sneaker")
    expect(page.locator("#counts tr", has_text="bag")).to_contain_text("8")
    expect(page.locator("#counts tr", has_text="sneaker")).to_contain_text("9")
    # Reads need the key: the model zip and the report come through fetches that send it.
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename.endswith(".zip") and download.value.failure() is None
    with page.context.expect_page() as report_tab:
        page.click("#report-link a")
    expect(report_tab.value.locator("body")).to_contain_text("accuracy", timeout=30_000)
    report_tab.value.close()
    if os.environ.get("SMALLDATA_SCREENSHOT"):
        page.screenshot(path=os.environ["SMALLDATA_SCREENSHOT"], full_page=True)
    assert not errors, errors

    # The same project through the REST API of the running server: an image batch in one request.
    files = [("files", (f"{name}.png", pngs[-2], "image/png")) for name, pngs in fashion_pngs.items()]
    projects = httpx.get(f"{url}/api/projects", headers={"X-API-Key": key}).json()
    answer = httpx.post(f"{url}/api/projects/{projects[0]['id']}/predict/images", files=files,
                        headers={"X-API-Key": key})
    assert answer.status_code == 200
    assert [p["label"] for p in answer.json()["predictions"]] == list(fashion_pngs)


def offline_page(browser, url):
    """A page whose requests to anywhere but the server are aborted (and listed)."""
    page = browser.new_page()
    blocked = []

    def only_the_server(route):
        if route.request.url.startswith(url + "/"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    return page, blocked


def test_swagger_ui_lists_the_operations_with_no_network(live_server, browser):
    from playwright.sync_api import expect

    url, _key = live_server
    page, blocked = offline_page(browser, url)
    page.goto(f"{url}/docs")
    operation = page.locator(".opblock-summary-path", has_text="/api/projects/{project_id}/predict/images")
    expect(operation.first).to_be_visible(timeout=30_000)
    assert page.locator(".opblock").count() >= 20
    assert not blocked, blocked
    page.close()


def test_redoc_lists_the_operations_with_no_network(live_server, browser):
    from playwright.sync_api import expect

    url, _key = live_server
    page, blocked = offline_page(browser, url)
    page.goto(f"{url}/redoc")
    expect(page.get_by_role("heading", name="Predict Images").first).to_be_visible(timeout=30_000)
    expect(page.locator("h2", has_text="Create Project").first).to_be_visible()
    assert not blocked, blocked
    page.close()


def test_on_loopback_with_no_key_the_page_needs_none_until_a_key_is_made(browser, tmp_path):
    from playwright.sync_api import expect

    from smalldata.service import auth

    with running(tmp_path, loopback_only=True) as (url, app):
        page = browser.new_page()
        page.goto(url)
        expect(page.locator("#key-state")).to_contain_text("No API key needed")
        expect(page.locator("#api-key")).to_be_hidden()
        page.fill("#project-name", "my own")
        page.check("input[name=modality][value=text]")
        page.click("#new-project button")
        expect(page.locator("#project-title")).to_have_text("my own (texts)")
        page.fill("#text-input", "rain and wind all afternoon")
        page.fill("#text-label", "weather")
        page.click("#add-text button")
        expect(page.locator("#counts")).to_contain_text("weather")

        key = auth.create_key(app.state.service.sessions, "now keys are on")
        page.goto(url)
        expect(page.locator("#api-key")).to_be_visible()
        expect(page.locator("#message")).to_have_class("hint")
        expect(page.locator("#new-project")).to_be_hidden()
        page.fill("#api-key", key)
        page.click("#key-form button")
        expect(page.locator("#project-list")).to_contain_text("my own")  # nothing made before the key is lost
        expect(page.locator("#new-project")).to_be_visible()
        page.close()


@pytest.mark.slow
def test_training_shows_its_budget_and_time_left_and_can_be_cancelled(browser, tmp_path):
    from playwright.sync_api import expect

    from tests.conftest import DATA

    with running(tmp_path, loopback_only=True) as (url, _app):
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.fill("#project-name", "topics")
        page.check("input[name=modality][value=text]")
        page.fill("#project-budget", "soon")
        page.click("#new-project button")
        expect(page.locator("#message")).to_contain_text("a budget looks like 90s")  # and no project was made
        page.fill("#project-budget", "2m")
        page.click("#new-project button")
        expect(page.locator("#budget")).to_have_value("2m")
        page.set_input_files("#csv-file", str(DATA / "topics.csv"))
        page.click("#add-csv button")
        expect(page.locator("#counts")).to_contain_text("weather")
        weather = page.locator("#gallery details[data-label=weather]")
        weather.locator("summary").click()
        expect(weather.locator("figure blockquote")).to_have_count(8)  # texts show their first lines

        page.click("#train")  # the first job waits for a fresh worker to load its backbones: time to cancel
        expect(page.locator("#job-time")).to_contain_text("left of its 2 min 0 s budget", timeout=30_000)
        page.click("#cancel")
        expect(page.locator("#job")).to_contain_text("cancelled", timeout=30_000)
        expect(page.locator("#train")).to_be_enabled()

        page.fill("#budget", "0")
        page.click("#budget-form button")
        expect(page.locator("#message")).to_contain_text("frozen backbones only")
        page.fill("#unlabeled-texts", "Heavy rain is expected overnight.\nThe goalkeeper saved a penalty.\n"
                                      "Simmer the sauce for twenty minutes.\nClear skies and a light breeze.\n"
                                      "The match went to extra time.")
        page.click("#add-unlabeled button")
        expect(page.locator("#unlabeled-count")).to_contain_text("5 unlabeled examples")
        page.click("#train")
        expect(page.locator("#accuracy")).to_contain_text("Fine-tuning: not tried: --budget 0", timeout=180_000)

        # Label these next: one click takes the model's guess, and the example joins its class.
        first = page.locator("#suggestions figure").first
        expect(first.locator("blockquote")).to_be_visible(timeout=120_000)
        guess = first.locator("button.suggested").inner_text().removeprefix("It is ")
        before = int(page.locator("#counts tr", has_text=guess).locator("td").nth(1).inner_text())
        first.locator("button.suggested").click()
        expect(page.locator("#message")).to_contain_text(f"labeled {guess}")
        expect(page.locator("#unlabeled-count")).to_contain_text("4 unlabeled examples")
        expect(page.locator("#counts tr", has_text=guess).locator("td").nth(1)).to_have_text(str(before + 1))
        page.goto(url)
        expect(page.locator("#project-list")).to_have_text("topics (texts, 25 examples, trained)")
        assert not errors, errors
        page.close()


@pytest.mark.slow
def test_class_folders_at_once_and_a_gallery_per_class(browser, fashion_pngs, tmp_path):
    from playwright.sync_api import expect

    root = tmp_path / "clothes"
    for label, pngs in fashion_pngs.items():
        (root / label).mkdir(parents=True)
        for i, data in enumerate(pngs[:4]):
            (root / label / f"{label}{i}.png").write_bytes(data)
    (root / "bag" / "notes.txt").write_text("not an image")
    (tmp_path / "papers" / "drafts").mkdir(parents=True)
    (tmp_path / "papers" / "drafts" / "a.txt").write_text("no image here")

    with running(tmp_path / "data", loopback_only=True) as (url, _app):
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.fill("#project-name", "clothes")
        page.click("#new-project button")
        expect(page.locator("#project-title")).to_have_text("clothes (images)")

        page.set_input_files("#folder-files", str(tmp_path / "papers"))  # no image anywhere: said, nothing added
        expect(page.locator("#message")).to_have_class("error")
        expect(page.locator("#message")).to_contain_text("hold no images")
        expect(page.locator("#counts")).to_contain_text("no examples yet")

        page.set_input_files("#folder-files", str(root))
        expect(page.locator("#message")).to_contain_text("added 12 examples to 3 classes")
        expect(page.locator("#message")).to_contain_text("1 files that are not images skipped")
        for label in fashion_pngs:
            expect(page.locator("#counts tr", has_text=label)).to_contain_text("4")

        bags = page.locator("#gallery details[data-label=bag]")
        bags.locator("summary").click()
        expect(bags.locator("figure img")).to_have_count(4)
        expect(bags.locator("figure img").first).to_have_attribute("src", re.compile("^blob:"))  # fetched, with no key
        page.once("dialog", lambda dialog: dialog.accept("   "))  # an empty class: refused, nothing changed
        bags.locator("figure button", has_text="Relabel").first.click()
        expect(page.locator("#message")).to_contain_text("cannot be empty")
        expect(page.locator("#counts tr", has_text="bag")).to_contain_text("4")
        page.once("dialog", lambda dialog: dialog.accept("sneaker"))
        bags.locator("figure button", has_text="Relabel").first.click()
        expect(page.locator("#counts tr", has_text="sneaker")).to_contain_text("5")
        expect(page.locator("#counts tr", has_text="bag")).to_contain_text("3")
        expect(bags.locator("figure")).to_have_count(3)  # the fold stays open, with the new counts

        # Two class folders dragged onto the drop zone at once (Chromium's own drag, real folders).
        for label in ("trouser", "bag"):
            (tmp_path / "drop" / label).mkdir(parents=True)
            for i, data in enumerate(fashion_pngs[label][4:6]):
                (tmp_path / "drop" / label / f"new{i}.png").write_bytes(data)
        box = page.locator("#drop").bounding_box()
        where = {"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2}
        dragged = {"items": [], "dragOperationsMask": 1,
                   "files": [str(tmp_path / "drop" / "trouser"), str(tmp_path / "drop" / "bag")]}
        cdp = page.context.new_cdp_session(page)
        for kind in ("dragEnter", "dragOver", "drop"):
            cdp.send("Input.dispatchDragEvent", {"type": kind, **where, "data": dragged})
        expect(page.locator("#message")).to_contain_text("added 4 examples to 2 classes (trouser 2, bag 2)")
        expect(page.locator("#counts tr", has_text="trouser")).to_contain_text("6")
        expect(page.locator("#counts tr", has_text="bag")).to_contain_text("5")
        assert not errors, errors
        page.close()


def test_the_camera_adds_frames_to_the_class_typed(browser, tmp_path):
    from playwright.sync_api import expect

    with running(tmp_path, loopback_only=True) as (url, _app):
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.fill("#project-name", "desk")
        page.click("#new-project button")
        expect(page.locator("#project-title")).to_have_text("desk (images)")
        page.click("#camera-start")
        expect(page.locator("#camera-video")).to_be_visible()
        page.wait_for_function("document.querySelector('#camera-video').videoWidth > 0", timeout=15_000)
        page.click("#camera-capture")  # no class typed yet: said, nothing added
        expect(page.locator("#message")).to_contain_text("type the class")
        expect(page.locator("#counts")).to_contain_text("no examples yet")
        page.fill("#image-label", "pattern")
        page.click("#camera-capture")
        expect(page.locator("#camera-count")).to_have_text("1 frame added")
        page.wait_for_timeout(300)  # the fake camera's picture moves: the next frame is another image
        page.click("#camera-capture")
        expect(page.locator("#camera-count")).to_have_text("2 frames added")
        expect(page.locator("#counts tr", has_text="pattern")).to_contain_text("2")
        page.click("#camera-stop")
        expect(page.locator("#camera-video")).to_be_hidden()
        assert page.evaluate("document.querySelector('#camera-video').srcObject.getTracks()"
                             ".every((track) => track.readyState === 'ended')")
        assert not errors, errors
        page.close()
