"""End to end in a real browser: Debian's headless Chromium driven by Playwright.

Starts ``nero dashboard RUN --runs-root ROOT --port PORT`` on the tiny run, opens every page,
waits for the Plotly charts and heatmap images to render, clicks a point of the relevance map
to open the inspector, and saves ``screenshot_<page>.png`` files.

Set ``NERO_SCREENSHOT_ROOT`` (a runs root) and ``NERO_SCREENSHOT_RUN`` (a run name in it) to
take the screenshots of another run, e.g. the demo run, instead of the tiny test run, and
``NERO_SCREENSHOT_DIR=assets`` to refresh the README screenshots (default: a temp folder).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest

from tests.dashboard_fixtures import TINY_RUN, runs_root, tiny_data  # noqa: F401

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Where screenshots go: a temporary folder, so a test run never rewrites the README's images;
# NERO_SCREENSHOT_DIR=assets (with NERO_SCREENSHOT_ROOT/RUN on the demo) refreshes those.
ASSETS = Path(os.environ.get("NERO_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="nero-shots-"))
SERVER_START_S = 90
RENDER_MS = 90_000
MAX_SHOT_PX = 5000


def ensure_chromium() -> None:
    """Install Debian's chromium when it is missing (CI on a fresh machine runs as root)."""
    if CHROMIUM.exists():
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("/usr/bin/chromium is missing and apt-get cannot install it here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
        check=True,
        env=env,
        capture_output=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_health(base: str, proc: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as reply:
                if reply.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    log.seek(0)
    out = log.read().decode(errors="replace")
    pytest.fail(f"the dashboard did not start within {SERVER_START_S} s:\n{out[-3000:]}")


def stop_group(proc: subprocess.Popen) -> None:
    """Stop `nero dashboard` and the Streamlit server it started (one process group)."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # the parent is gone; make sure its Streamlit child is too
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, Path]]:
    ensure_chromium()
    custom = os.environ.get("NERO_SCREENSHOT_ROOT")
    root = Path(custom) if custom else request.getfixturevalue("runs_root")
    name = os.environ.get("NERO_SCREENSHOT_RUN") or TINY_RUN
    port = free_port()
    nero = Path(sys.executable).with_name("nero")
    cmd = [str(nero), "dashboard", str(root / name), "--runs-root", str(root), "--port", str(port)]
    # The server's output goes to a file: a pipe nobody reads could fill up and block it.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_health(base, proc, log)
            yield base, name, root
        finally:
            stop_group(proc)


@pytest.fixture(scope="module")
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        tab = context.new_page()
        tab.set_default_timeout(RENDER_MS)
        yield tab
        context.close()
        browser.close()


def settle(page) -> None:
    """Wait until Streamlit has finished the script run and the page stops changing."""
    page.wait_for_selector('[data-testid="stApp"]')
    quiet = """() => {
        const w = document.querySelector('[data-testid="stStatusWidget"]');
        const busy = w && /Running|Stop/.test(w.innerText);
        return !busy && !document.querySelector('[data-testid="stSpinner"]');
    }"""
    page.wait_for_function(quiet, timeout=RENDER_MS)
    page.wait_for_timeout(800)
    page.wait_for_function(quiet, timeout=RENDER_MS)  # a rerun may have started meanwhile


def no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.inner_text("body")[:2000]


def shoot(page, name: str) -> Path:
    """The whole page: Streamlit scrolls inside its main block, so grow the window to fit."""
    ASSETS.mkdir(exist_ok=True)
    path = ASSETS / f"screenshot_{name}.png"
    height = page.evaluate(
        "() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
        " return m ? m.scrollHeight : document.body.scrollHeight; }"
    )
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(int(height) + 40, MAX_SHOT_PX)})
    page.wait_for_timeout(600)  # the charts resize with the window
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path


MAP_DOTS = '[data-testid="stVegaLiteChart"] .mark-symbol path'


def click_a_point(page) -> None:
    """Click map dots (some may hide under others, or be stars) until one is picked."""
    points = page.locator(MAP_DOTS)
    button = page.get_by_role("button", name="Open in the inspector")
    for n in range(0, min(points.count(), 40), 3):
        box = points.nth(n).bounding_box()
        if box is None:
            continue
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        try:
            button.wait_for(timeout=15_000)
        except Exception:  # playwright's TimeoutError: try the next point
            continue
        settle(page)
        return
    pytest.fail("clicking map points never picked a sample")


def centre_of(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def drag_a_box_over_the_map(page) -> None:
    """Drag a box over the middle of the map: a selection of many dots."""
    chart = page.locator('[data-testid="stVegaLiteChart"] svg').first.bounding_box()
    x0, y0 = chart["x"] + chart["width"] * 0.2, chart["y"] + chart["height"] * 0.1
    x1, y1 = chart["x"] + chart["width"] * 0.8, chart["y"] + chart["height"] * 0.7
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()


def telling_sample(root: Path, run_name: str) -> int:
    """The highest-scoring OOD sample with an artefact mask, else the highest-scoring OOD one."""
    import pandas as pd

    samples = pd.read_csv(root / run_name / "samples.csv", keep_default_na=False)
    scores = pd.read_csv(root / run_name / "scores.csv")
    ood = samples["split"].str.startswith("ood:").to_numpy()
    if "mask" in samples.columns and (samples["mask"].astype(str) != "").any():
        ood = ood & (samples["mask"].astype(str) != "").to_numpy()
    rows = samples.index[ood]
    return int(rows[scores.loc[rows, "nero"].to_numpy().argmax()])


def an_ood_image(root: Path, run_name: str) -> Path:
    import pandas as pd

    samples = pd.read_csv(root / run_name / "samples.csv")
    ood = samples[samples["split"].str.startswith("ood:")]
    return Path(ood["path"].iloc[len(ood) // 2])


def test_every_page_renders_and_a_map_click_opens_the_inspector(server, page):
    base, run_name, root = server
    # Overview: histogram and ROC charts
    page.goto(f"{base}/?run={run_name}&view=overview")
    page.wait_for_selector("h1:has-text('Overview')")
    page.wait_for_selector(
        '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg'
    )
    settle(page)
    assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 2  # histogram and ROC
    no_exception(page)
    assert "/overview" in page.url  # an old ?view= link lands on the page's own address
    shoot(page, "overview")

    # Relevance map: click a sample, then open it in the inspector
    page.goto(f"{base}/map?run={run_name}")
    page.wait_for_selector("h1:has-text('Relevance map')")
    page.wait_for_selector(MAP_DOTS)
    settle(page)
    no_exception(page)
    drag_a_box_over_the_map(page)  # many dots: their thumbnails and a bulk review
    page.wait_for_selector("h3:has-text('images selected')", timeout=RENDER_MS)
    settle(page)
    selected = int(page.locator("h3:has-text('images selected')").inner_text().split()[0])
    assert selected > 1
    assert page.get_by_text(f"Review the {selected} selected images").count() == 1
    page.mouse.dblclick(*centre_of(page.locator('[data-testid="stVegaLiteChart"] svg').first))
    settle(page)
    click_a_point(page)
    shoot(page, "map")
    page.get_by_role("button", name="Open in the inspector").click()

    # Inspector: the picked sample, its neuron bars and both heatmaps
    page.wait_for_selector("h1:has-text('Sample inspector')")
    page.wait_for_selector('[data-testid="stVegaLiteChart"]')
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 3",
        timeout=RENDER_MS,
    )
    settle(page)
    no_exception(page)
    assert "/inspector" in page.url and "sample=" in page.url
    # both panels: a heatmap, or an OOD map with nothing beyond what normal images show
    drawn = page.get_by_text("Heatmap (PNG)").count()
    assert drawn == 2 or (drawn == 1 and page.get_by_text("No unusual evidence").count() == 1)
    picked = page.url

    # A shared link opens the inspector on a telling sample (an artefact with its outline)
    page.goto(f"{base}/?run={run_name}&view=inspector&sample={telling_sample(root, run_name)}")
    page.wait_for_selector("h1:has-text('Sample inspector')")
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 3",
        timeout=RENDER_MS,
    )
    settle(page)
    no_exception(page)
    shoot(page, "inspector")

    # The sidebar navigation keeps the shareable address up to date
    page.get_by_role("link", name="Overview").click()
    page.wait_for_selector("h1:has-text('Overview')")
    settle(page)
    page.wait_for_function("() => location.pathname.endsWith('/overview')")

    # ... and the copied address of a page opens that page, not "Page not found"
    page.goto(picked)
    page.wait_for_selector("h1:has-text('Sample inspector')")
    settle(page)
    assert "Page not found" not in page.inner_text("body")

    # Score a new image: upload one of the run's OOD images, get its verdict and explanation
    page.goto(f"{base}/score?run={run_name}")
    page.wait_for_selector("h1:has-text('Score a new image')")
    settle(page)
    page.locator("input[type=file]").set_input_files(str(an_ood_image(root, run_name)))
    page.wait_for_selector("h3:has-text('Why this score')")
    page.wait_for_selector('[data-testid="stVegaLiteChart"]')
    settle(page)
    no_exception(page)
    assert page.get_by_text("NERO score").count() >= 1
    shoot(page, "score")

    # New run: the form
    page.goto(f"{base}/new-run?run={run_name}")
    page.wait_for_selector("h1:has-text('New run')")
    settle(page)
    no_exception(page)
    shoot(page, "new_run")


def test_worklist_filters_and_opens_a_row_and_links_fail_visibly(server, page):
    base, run_name, _root = server
    page.goto(f"{base}/?run={run_name}")
    page.wait_for_selector("h1:has-text('Worklist')")
    page.wait_for_selector('[data-testid="stDataFrame"]')
    settle(page)
    no_exception(page)
    shoot(page, "worklist")
    # a filter that matches nothing, then back
    page.get_by_label("File name contains").fill("no-such-file")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.body.innerText.includes('0 of')", timeout=RENDER_MS)
    page.get_by_label("File name contains").fill("")
    page.keyboard.press("Enter")
    settle(page)
    # the first row's selection box opens it in the inspector
    grid = page.locator('[data-testid="stDataFrame"]').first
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 12, box["y"] + 36 + 17)
    page.wait_for_selector("h1:has-text('Sample inspector')", timeout=RENDER_MS)
    settle(page)
    no_exception(page)
    assert "/inspector" in page.url and "sample=" in page.url
    # keyboard: K goes to the next sample of the worklist, J back (the worklist's order)
    order = worklist_order(_root, run_name)
    first = int(query_of(page.url)["sample"])
    assert first == order[0]
    page.locator("h1").first.click()  # focus off any input
    page.keyboard.press("k")
    page.wait_for_function(
        f"() => new URLSearchParams(location.search).get('sample') === '{order[1]}'",
        timeout=RENDER_MS,
    )
    settle(page)
    page.keyboard.press("j")
    page.wait_for_function(
        f"() => new URLSearchParams(location.search).get('sample') === '{order[0]}'",
        timeout=RENDER_MS,
    )
    # a link to a run that is not here says so
    page.goto(f"{base}/inspector?run=nope&sample=3")
    page.wait_for_selector("h1:has-text('Sample inspector')")
    settle(page)
    assert "names the run “nope”, which is not here" in page.inner_text("body")


def worklist_order(root: Path, run_name: str, method: str | None = None) -> list[int]:
    """The worklist's default order: every image but the training ones, most unusual first
    by ``method`` (default: the run's default detector)."""
    import numpy as np

    from nero.run.directory import read_run

    run = read_run(root / run_name)
    scores = run.scores[method or run.default_method].to_numpy()
    rows = np.flatnonzero(run.samples["split"].to_numpy() != "id_train")
    return rows[np.argsort(-scores[rows], kind="stable")].tolist()


def download_of(page, button: str, tries: int = 3) -> Path:
    """Click a download button and return the file. A click that lands while Streamlit is
    still rerunning the page (its data is made on click) is lost; it is clicked again."""
    for attempt in range(tries):
        try:
            with page.expect_download(timeout=30_000) as download:
                page.get_by_role("button", name=button).click()
            return Path(download.value.path())
        except Exception:  # playwright's TimeoutError: the click was lost, try again
            if attempt == tries - 1:
                raise
            settle(page)
    raise AssertionError("unreachable")


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def test_every_page_keeps_its_link_and_shows_the_three_verdicts(server, page):
    """A link with run, sample, method and threshold opens every page as it says and stays."""
    import pandas as pd

    from dashboard.pages import BY_KEY, DEFAULT, KEYS
    from dashboard.verdicts import STYLE
    from nero.run.directory import read_run
    from nero.run.verdicts import run_thresholds

    base, run_name, root = server
    run = read_run(root / run_name)
    method = next(m for m in run.methods if m != "nero")
    wanted = {"run": run_name, "sample": "5", "method": method, "threshold": "1.25"}
    for key in KEYS:
        path = "/" if key == DEFAULT else f"/{key}"  # the landing page's address is the root
        page.goto(f"{base}{path}?" + "&".join(f"{k}={v}" for k, v in wanted.items()))
        page.wait_for_selector(f"h1:has-text('{BY_KEY[key].title}')")
        settle(page)
        no_exception(page)
        assert urlsplit(page.url).path == path, (key, page.url)
        assert query_of(page.url) == wanted, (key, page.url)
        body = page.inner_text("body")
        assert "not in this run" not in body and "Page not found" not in body, key

    # the inspector's badge: the engine's verdict of that sample, in words, with the rule
    thr = run_thresholds(run, "nero")
    verdicts = thr.verdict(run.scores["nero"].to_numpy())
    for state in pd.unique(verdicts):
        sample = list(verdicts).index(state)
        page.goto(f"{base}/inspector?run={run_name}&sample={sample}")
        page.wait_for_selector("h1:has-text('Sample inspector')")
        settle(page)
        body = page.inner_text("body")
        assert STYLE[state][2] in body, (state, sample)
        assert "of normal test images exceed" in body


def test_a_review_saved_in_the_inspector_is_in_the_run_and_the_worklist_export(server, page):
    if os.environ.get("NERO_SCREENSHOT_ROOT"):
        pytest.skip("writes a review into the run; only on the test's own run")
    import getpass

    import pandas as pd

    from nero.run.directory import read_run
    from nero.run.reviews import REVIEWS_FILE, review_history

    base, run_name, root = server
    run = read_run(root / run_name)
    sample = int(run.rows("id_test")[0])  # the worklist hides training
    store = root / run_name / REVIEWS_FILE
    kept = {p: p.read_bytes() for p in store.parent.glob(REVIEWS_FILE + "*")}
    try:
        page.goto(f"{base}/inspector?run={run_name}&sample={sample}")
        page.wait_for_selector("h1:has-text('Sample inspector')")
        settle(page)
        page.get_by_text("Disagree", exact=True).click()  # the form is open beside the verdict
        page.get_by_label("Note (optional)").fill("frame artefact, not tissue")
        page.get_by_role("button", name="Save review").click()
        settle(page)
        no_exception(page)

        last = review_history(run).iloc[-1]
        assert (int(last["index"]), last["review"]) == (sample, "disagree")
        assert (last["reviewer"], last["note"]) == (getpass.getuser(), "frame artefact, not tissue")
        assert last["method"] and last["verdict"]

        # a fresh visit shows it, and the worklist's export carries it
        page.goto(f"{base}/inspector?run={run_name}&sample={sample}")
        page.wait_for_selector("h1:has-text('Sample inspector')")
        settle(page)
        page.wait_for_selector(f"text=Last review by {getpass.getuser()}")
        page.goto(f"{base}/?run={run_name}")
        page.wait_for_selector('[data-testid="stDataFrame"]')
        settle(page)
        exported = pd.read_csv(download_of(page, "Export these"), keep_default_na=False)
        row = exported[exported["index"] == sample]
        assert row["review"].tolist() == ["disagree"]
    finally:  # the run is shared with other tests: leave its reviews as they were
        for p in store.parent.glob(REVIEWS_FILE + "*"):
            p.unlink()
        for p, data in kept.items():
            p.write_bytes(data)


def grid_rows(page, count: int) -> list[list[str]]:
    """The first ``count`` rows of the page's first table, as the grid's accessible table
    gives them (the columns in view)."""
    rows = page.locator('[data-testid="stDataFrame"] table').first.locator("tr")
    out = []
    for k in range(1, count + 1):  # row 0: the header
        cells = rows.nth(k).locator("td, th")
        out.append([cells.nth(j).inner_text() for j in range(cells.count())])
    return out


def test_one_story_per_image_in_the_browser(server, page):
    """The worklist's and the inspector's verdicts agree for several methods; a set where the
    method is weak is flagged on the overview; a map without evidence and neighbours that are
    not close say so."""
    from dashboard import state
    from nero.detect.registry import method_label
    from nero.explain.attribution import Heatmap
    from nero.run.directory import read_run
    from nero.run.heatmap_view import NEGLIGIBLE_WORDS
    from nero.run.heatmaps import cache_path
    from nero.run.report import weak_sets
    from nero.run.scoring import nearest_train, neighbour_scale
    from nero.run.verdicts import telling_samples

    base, run_name, root = server
    run = read_run(root / run_name)
    opened: set[int] = set()
    ahead: set[int] = set()  # the maps the inspector prepared ahead (the worklist's next rows)
    for method in ("nero", "msp", "knn"):
        page.goto(f"{base}/?run={run_name}&method={method}")
        page.wait_for_selector('[data-testid="stDataFrame"] table', state="attached")
        settle(page)
        for cells in grid_rows(page, 2):
            index, words = int(cells[1]), cells[2].split(" ", 1)[1]  # "🔴 Out-of-distribution"
            opened.add(index)
            ahead |= set(state.neighbours_in(worklist_order(root, run_name, method), index))
            page.goto(f"{base}/inspector?run={run_name}&method={method}&sample={index}")
            page.wait_for_selector("h1:has-text('Sample inspector')")
            settle(page)
            badge = page.locator(f"text=by {method_label(method)}").first.inner_text()
            assert words in badge, (method, index, badge)

    weak = next((m for m in run.methods if weak_sets(run.report, m)), None)
    assert weak is not None, "the tiny random-weight run has a method below 60 AUROC somewhere"
    page.goto(f"{base}/overview?run={run_name}&method={weak}")
    page.wait_for_selector("h1:has-text('Overview')")
    settle(page)
    assert "does poorly on" in page.inner_text("body")

    # a constructed empty class map (the OOD map of no evidence says "no unusual evidence"),
    # and the neighbour sentence the engine gives that sample
    # a sample whose maps this server has not computed yet (warmed, or opened above)
    seen = opened | ahead | set(telling_samples(run, run.default_method).values())
    sample = next(int(i) for i in run.rows("ood:noise")[::-1] if int(i) not in seen)
    pred = int(run.samples["pred"].iat[sample])
    path = cache_path(run, sample, "class", pred)
    kept = path.read_bytes() if path.is_file() else None
    try:
        path.parent.mkdir(exist_ok=True)
        Heatmap(np.zeros((32, 32), np.float32), "class", pred, pred, "lrp", "test", "", 0.0).save(
            path
        )
        page.goto(f"{base}/inspector?run={run_name}&sample={sample}")
        page.wait_for_selector("h1:has-text('Sample inspector')")
        settle(page)
        body = page.inner_text("body")
        assert NEGLIGIBLE_WORDS in body
        near, dist = nearest_train(run, run.relevance[sample], k=6)
        sentence = neighbour_scale(run).words(dist)
        assert sentence.split(":")[0] in body
    finally:
        path.unlink(missing_ok=True)
        if kept is not None:
            path.write_bytes(kept)


def test_rows_ticked_in_the_worklist_are_reviewed_together(server, page):
    """Bulk review: two rows ticked, one mark each with its own score and verdict."""
    if os.environ.get("NERO_SCREENSHOT_ROOT"):
        pytest.skip("writes reviews into the run; only on the test's own run")
    from nero.run.directory import read_run
    from nero.run.reviews import REVIEWS_FILE, review_history
    from nero.run.verdicts import run_thresholds

    base, run_name, root = server
    run = read_run(root / run_name)
    store = root / run_name / REVIEWS_FILE
    kept = {p: p.read_bytes() for p in store.parent.glob(REVIEWS_FILE + "*")}
    before = len(review_history(run))
    row_px = 96 + 8  # dashboard/views/worklist.py ROW_PX (importing the page would run it)
    try:
        page.goto(f"{base}/?run={run_name}")
        page.wait_for_selector('[data-testid="stDataFrame"]')
        settle(page)
        page.get_by_text("Select several", exact=True).click()
        page.wait_for_selector("text=Tick rows at their left", timeout=RENDER_MS)
        settle(page)
        box = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
        for row in (0, 1):  # the row-marker column at the left holds each row's tick box
            page.mouse.click(box["x"] + 12, box["y"] + 36 + row * row_px + row_px // 2)
            settle(page)
        page.wait_for_selector("text=Review the 2 selected images", timeout=RENDER_MS)
        form = page.locator('[data-testid="stForm"]').filter(has_text="Review the 2 selected")
        form.get_by_text("Unsure", exact=True).click()
        form.get_by_label("Tags (comma-separated, optional)").fill("bulk")
        form.get_by_role("button", name="Save for all 2").click()
        settle(page)
        no_exception(page)
        marks = review_history(run).iloc[before:]
        order = worklist_order(root, run_name)
        assert sorted(marks["index"].astype(int)) == sorted(order[:2])
        method = run.default_method
        thr = run_thresholds(run, method)
        for _, mark in marks.iterrows():
            score = float(run.scores[method].iat[int(mark["index"])])
            assert (mark["review"], mark["tags"], mark["method"]) == ("unsure", "bulk", method)
            assert float(mark["score"]) == pytest.approx(score)
            assert mark["verdict"] == thr.verdict(np.array([score]))[0]
    finally:  # the run is shared with other tests: leave its reviews as they were
        for p in store.parent.glob(REVIEWS_FILE + "*"):
            p.unlink()
        for p, data in kept.items():
            p.write_bytes(data)


def test_the_page_makes_no_request_outside_this_machine(server, page):
    base, run_name, _root = server
    outside: list[str] = []

    def watch(request) -> None:
        host = request.url.split("/")[2] if "://" in request.url else ""
        if request.url.startswith(
            ("http://", "https://", "ws://", "wss://")
        ) and not host.startswith(("127.0.0.1", "localhost")):
            outside.append(request.url)

    page.on("request", watch)
    for path in ("", "overview", "map", "inspector", "score", "new-run"):
        page.goto(f"{base}/{path}?run={run_name}")
        page.wait_for_selector("h1")
        settle(page)
    page.remove_listener("request", watch)
    assert outside == [], outside[:5]


def websocket_status(base: str, host: str) -> str:
    """The status line the server answers a websocket upgrade sent with ``Host: host``."""
    import base64

    port = int(base.rsplit(":", 1)[1])
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: streamlit\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request.encode())
        return conn.recv(1024).decode(errors="replace").split("\r\n", 1)[0]


def test_websocket_refuses_foreign_host_names(server) -> None:
    """DNS rebinding: a foreign name resolving to 127.0.0.1 must not reach the app."""
    base, _name, _root = server
    port = base.rsplit(":", 1)[1]
    assert " 101 " in websocket_status(base, f"localhost:{port}")
    assert " 101 " in websocket_status(base, f"127.0.0.1:{port}")
    assert " 101 " not in websocket_status(base, f"attacker.example:{port}")


def test_beyond_loopback_it_needs_sign_in_or_warns_on_every_page(tmp_path, runs_root, page):  # noqa: F811
    """A non-loopback bind without an OIDC configuration refuses to start; --no-auth starts
    and every page says that anyone who reaches it can mark reviews."""
    port = free_port()
    nero = Path(sys.executable).with_name("nero")
    cmd = [str(nero), "dashboard", str(runs_root / TINY_RUN), "--runs-root", str(runs_root)]
    cmd += ["--port", str(port), "--address", "0.0.0.0", "--allow-host", "localhost"]
    env = {**os.environ, "HOME": str(tmp_path)}  # no ~/.streamlit/secrets.toml of the user's
    refused = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "needs sign-in" in refused.stderr and "--no-auth" in refused.stderr
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [*cmd, "--no-auth"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_health(base, proc, log)
            for view in ("", "overview", "inspector"):
                page.goto(f"{base}/{view}?run={TINY_RUN}")
                page.wait_for_selector("text=without sign-in")
            page.wait_for_selector("text=Your name (unverified")
        finally:
            stop_group(proc)
