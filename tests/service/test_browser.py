"""The web page in a real browser (Debian's Chromium, driven by Playwright) against a real server on
loopback: the whole labeling loop in one test (create a project, drop class folders, train, fix what
the findings show, label suggested examples, retrain, see what changed), the offline API docs, keyless
local use and the camera."""

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


def class_folders(root, fashion, fashion_pngs):
    """CLASS/*.png for the three classes (8 each), with a planted label error (a sneaker in bag/),
    a near-duplicate (a trouser with one pixel changed) and a file that is no image."""
    from PIL import Image

    from smalldata.demo import CLASSES
    from tests.service.conftest import png_bytes

    for label, pngs in fashion_pngs.items():
        (root / label).mkdir(parents=True)
        for i, data in enumerate(pngs[:8]):
            (root / label / f"{label}{i}.png").write_bytes(data)
    images, labels = fashion
    sneaker = images[(labels == CLASSES.index("sneaker")).nonzero()[0][50]]
    (root / "bag" / "planted.png").write_bytes(png_bytes(Image.fromarray(sneaker).convert("RGB")))
    trouser = images[(labels == CLASSES.index("trouser")).nonzero()[0][0]].copy()
    trouser[0, 0] ^= 1
    (root / "trouser" / "copy.png").write_bytes(png_bytes(Image.fromarray(trouser).convert("RGB")))
    (root / "bag" / "notes.txt").write_text("not an image")
    return [root / label for label in fashion_pngs]


def unlabeled_pngs(fashion) -> list[dict]:
    """Six images of the three classes that are not among the labeled ones, as Playwright files."""
    from PIL import Image

    from smalldata.demo import CLASSES
    from tests.service.conftest import png_bytes

    images, labels = fashion
    picked = [i for name in ("trouser", "bag", "sneaker") for i in (labels == CLASSES.index(name)).nonzero()[0][100:102]]
    return [{"name": f"u{i}.png", "mimeType": "image/png", "buffer": png_bytes(Image.fromarray(images[i]).convert("RGB"))}
            for i in picked]


def drag_folders(page, folders) -> None:
    """Class folders dragged onto the drop zone at once (Chromium's own drag of real folders)."""
    box = page.locator("#drop").bounding_box()
    where = {"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2}
    dragged = {"items": [], "dragOperationsMask": 1, "files": [str(folder) for folder in folders]}
    cdp = page.context.new_cdp_session(page)
    for kind in ("dragEnter", "dragOver", "drop"):
        cdp.send("Input.dispatchDragEvent", {"type": kind, **where, "data": dragged})


def count_of(page, label):
    return page.locator("#counts tr", has_text=label).locator("td").nth(1)


@pytest.mark.slow
def test_the_whole_labeling_loop_in_the_browser(live_server, browser, fashion, fashion_pngs, tmp_path):
    """Issue 30's loop as a user goes through it: create a project, drop three class folders, train,
    see the advice and a suspected error, relabel it, label five suggested examples, retrain, and see
    the new version with what changed; with the bad input and the side roads on the way."""
    from playwright.sync_api import expect

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
    page.fill("#project-budget", "soon")
    page.click("#new-project button")
    expect(page.locator("#message")).to_contain_text("a budget looks like 90s")  # and no project was made
    page.fill("#project-budget", "2m")
    page.click("#new-project button")
    expect(page.locator("#project-title")).to_have_text("clothes (images)")
    expect(page.locator("#budget")).to_have_value("2m")

    # Folders: one with no image is refused, nothing added; three class folders dropped at once.
    (tmp_path / "papers" / "drafts").mkdir(parents=True)
    (tmp_path / "papers" / "drafts" / "a.txt").write_text("no image here")
    page.set_input_files("#folder-files", str(tmp_path / "papers"))
    expect(page.locator("#message")).to_have_class("error")
    expect(page.locator("#message")).to_contain_text("hold no images")
    expect(page.locator("#counts")).to_contain_text("no examples yet")
    drag_folders(page, class_folders(tmp_path / "clothes", fashion, fashion_pngs))
    expect(page.locator("#message")).to_contain_text("added 26 examples to 3 classes")
    expect(page.locator("#message")).to_contain_text("1 files that are not images skipped")
    for label, n in (("trouser", 9), ("bag", 9), ("sneaker", 8)):
        expect(count_of(page, label)).to_have_text(str(n))
    bags = page.locator("#gallery details[data-label=bag]")
    bags.locator("summary").click()
    expect(bags.locator("figure img")).to_have_count(9)
    expect(bags.locator("figure img").first).to_have_attribute("src", re.compile("^blob:"))  # fetched with the key
    page.once("dialog", lambda dialog: dialog.accept("   "))  # an empty class: refused, nothing changed
    bags.locator("figure button", has_text="Relabel").first.click()
    expect(page.locator("#message")).to_contain_text("cannot be empty")
    expect(count_of(page, "bag")).to_have_text("9")
    page.set_input_files("#unlabeled-images", unlabeled_pngs(fashion))
    page.click("#add-unlabeled button")
    expect(page.locator("#unlabeled-count")).to_contain_text("6 unlabeled examples")

    # Train; the first job waits for a fresh worker to load its backbones: time to see it and cancel.
    page.click("#train")
    expect(page.locator("#job-time")).to_contain_text("left of its 2 min 0 s budget", timeout=30_000)
    page.click("#cancel")
    expect(page.locator("#job")).to_contain_text("cancelled", timeout=30_000)
    expect(page.locator("#train")).to_be_enabled()
    page.fill("#budget", "0")
    page.click("#budget-form button")
    expect(page.locator("#message")).to_contain_text("frozen backbones only")
    page.click("#train")
    expect(page.locator("#try")).to_be_visible(timeout=180_000)
    expect(page.locator("#accuracy")).to_contain_text("of 26 examples right out of fold")
    expect(page.locator("#accuracy")).to_contain_text("95% interval")
    expect(page.locator("#accuracy")).to_contain_text("Fine-tuning: not tried: --budget 0")
    expect(page.locator("#accuracy")).to_contain_text("An input whose familiarity (its probability")
    expect(page.locator("#changes")).to_have_text("The project's first version.")
    assert "± 0.0%" not in page.locator("#result").inner_text()
    expect(page.locator("#confusion")).to_contain_text("sneaker")

    # The advice, once the report is written: the learning curve, and the examples to look at.
    expect(page.locator("#report-link a")).to_be_visible(timeout=120_000)
    expect(page.locator("#curve-summary")).to_contain_text("more examples per class")
    expect(page.locator("#curve-plot svg circle")).not_to_have_count(0)
    # The planted error is suspected, and one click gives it the class the model suggests.
    suspect = page.locator("#findings figure", has_text="labeled bag, looks like sneaker (suspected label error)")
    expect(suspect.first).to_be_visible()
    suspect.first.locator("button.suggested").click()
    expect(page.locator("#message")).to_contain_text("relabeled sneaker")
    expect(count_of(page, "bag")).to_have_text("8")
    expect(count_of(page, "sneaker")).to_have_text("9")
    # The planted near-duplicate: one click removes either one, and the message can put it back.
    pair = page.locator("#findings figure.pair", has_text="near-duplicates").first
    expect(pair).to_be_visible()
    pair.locator("button", has_text="Remove the second").click()
    expect(page.locator("#message")).to_contain_text("removed an example of")
    removed_from = page.locator("#message").inner_text().split("removed an example of ")[1].split(";")[0]
    before = int(count_of(page, removed_from).inner_text())  # the counts are shown before the message
    page.click("#undo")
    expect(page.locator("#message")).to_contain_text(f"put back the example of {removed_from}")
    expect(count_of(page, removed_from)).to_have_text(str(before + 1))
    page.reload()  # the findings are the report's: what was dealt with since stays gone
    expect(page.locator("#report-link a")).to_be_visible()  # drawn with the findings
    expect(page.locator("#findings figure", has_text="labeled bag, looks like sneaker")).to_have_count(0)

    # Label these next: five suggestions, one click each for the model's guess.
    for left in range(5, 0, -1):
        first = page.locator("#suggestions figure").first
        expect(first.locator("img")).to_have_attribute("src", re.compile("^blob:"))
        guess = first.locator("button.suggested").inner_text().removeprefix("It is ")
        first.locator("button.suggested").click()
        expect(page.locator("#message")).to_contain_text(f"labeled {guess}")
        expect(page.locator("#unlabeled-count")).to_contain_text(f"The project has {left} unlabeled example")

    # Try it: an image, then a threshold under which the answer is 'unknown'.
    page.set_input_files("#try-file", {"name": "new.png", "mimeType": "image/png", "buffer": fashion_pngs["bag"][-1]})
    page.click("#try-image button")
    expect(page.locator("#predicted-label")).to_have_text("bag")
    expect(page.locator("#prediction")).to_contain_text("answered: familiarity")
    page.fill("#try-threshold", "1")
    page.click("#try-image button")
    expect(page.locator("#predicted-label")).to_have_text("unknown")
    expect(page.locator("#prediction")).to_contain_text("no class reached probability 1.0000")
    expect(page.locator("#prediction")).to_contain_text("bag")
    page.fill("#try-threshold", "")
    call_the_snippets(page, url, key, tmp_path, fashion_pngs["bag"][-1])
    # Reads need the key: the model zip and the report come through fetches that send it.
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename.endswith(".zip") and download.value.failure() is None
    with page.context.expect_page() as report_tab:
        page.click("#report-link a")
    expect(report_tab.value.locator("body")).to_contain_text("accuracy", timeout=30_000)
    report_tab.value.close()

    # Retrain: the new version says what changed since the first, with both accuracies.
    page.click("#train")
    expect(page.locator("#accuracy")).to_contain_text("Version 2:", timeout=180_000)
    expect(page.locator("#changes")).to_contain_text("Since version 1: 5 added (")
    expect(page.locator("#changes")).to_contain_text("1 relabelled (bag → sneaker 1)")
    expect(page.locator("#changes")).to_contain_text("before,")
    rows = page.locator("#versions tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first.locator("td.changed")).to_contain_text("bag → sneaker 1")
    expect(rows.last.locator("td.changed")).to_have_text("The project's first version.")
    if os.environ.get("SMALLDATA_SCREENSHOT"):
        page.screenshot(path=os.environ["SMALLDATA_SCREENSHOT"], full_page=True)

    # An outlier whose nearest class is another (none is certain among these, so one is shown as
    # the report would give it): an empty class is refused, and one click takes the nearest class.
    pid = int(page.evaluate("state.project.id"))
    bag = httpx.get(f"{url}/api/projects/{pid}/examples", params={"label": "bag"}, headers={"X-API-Key": key}).json()[0]
    page.evaluate("(id) => showFindings({outliers: [{example_id: id, label: 'bag', nearest_class: 'trouser', score: 3}]})", bag["id"])
    outlier = page.locator("#findings figure", has_text="labeled bag, nearest class trouser: unlike every class (outlier)")
    page.once("dialog", lambda dialog: dialog.accept(""))
    outlier.locator("button", has_text="Relabel").click()
    expect(page.locator("#message")).to_contain_text("a class name cannot be empty: the example keeps its class")
    outlier.locator("button.suggested", has_text="Label it trouser").click()
    expect(page.locator("#message")).to_contain_text("relabeled trouser")
    expect(outlier).to_have_count(0)
    assert httpx.get(f"{url}/api/examples/{bag['id']}", headers={"X-API-Key": key}).json()["label"] == "trouser"
    page.goto(url)
    expect(page.locator("#project-list")).to_contain_text("clothes (images, 31 examples, trained)")
    assert not errors, errors
    page.close()

    # The same project through the REST API of the running server: an image batch in one request
    # (the top class each; version 2 learned from the model's own guesses, and its floor may say 'unknown').
    files = [("files", (f"{name}.png", pngs[-2], "image/png")) for name, pngs in fashion_pngs.items()]
    projects = httpx.get(f"{url}/api/projects", headers={"X-API-Key": key}).json()
    answer = httpx.post(f"{url}/api/projects/{projects[0]['id']}/predict/images", files=files,
                        params={"unknown": "false"}, headers={"X-API-Key": key})
    assert answer.status_code == 200
    assert [p["label"] for p in answer.json()["predictions"]] == list(fashion_pngs)


def call_the_snippets(page, url, key, tmp_path, image) -> None:
    """The snippets on the page work as they are, once the key is put in."""
    (tmp_path / "photo.jpg").write_bytes(image)  # the service reads content, not names
    python = page.locator("#snippet-python").inner_text()
    assert f"{url}/api/projects/" in python and "YOUR_API_KEY" in python
    (tmp_path / "call.py").write_text(python.replace("YOUR_API_KEY", key))
    called = subprocess.run([sys.executable, "call.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert called.returncode == 0 and called.stdout.startswith("bag "), called.stderr
    if shutil.which("curl"):
        curl = page.locator("#snippet-curl").inner_text().replace("YOUR_API_KEY", key)
        called = subprocess.run(["bash", "-c", curl], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
        assert called.returncode == 0 and json.loads(called.stdout)["predictions"][0]["label"] == "bag", called


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
    from tests.conftest import DATA

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
        page.set_input_files("#csv-file", str(DATA / "topics.csv"))
        page.click("#add-csv button")
        expect(page.locator("#counts tr", has_text="weather")).to_contain_text("9")
        weather = page.locator("#gallery details[data-label=weather]")
        weather.locator("summary").click()
        expect(weather.locator("figure blockquote")).to_have_count(9)  # texts show their first lines
        page.fill("#unlabeled-texts", "Heavy rain is expected overnight.\nThe goalkeeper saved a penalty.")
        page.click("#add-unlabeled button")
        expect(page.locator("#unlabeled-count")).to_contain_text("2 unlabeled examples")

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
