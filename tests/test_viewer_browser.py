"""The HTML viewer in a real headless browser (Chromium driven by Playwright).

The page is opened from disk, 24 source points are clicked with the mouse,
the page's answers are read back from its list and compared with
``Matcher.match`` pixel for pixel; a screenshot must not be blank and the
page must make no network request.

CI installs Chromium from the Debian packages (``.ci/run``) and Playwright
from the ``test`` extra and sets GEOMATCH_REQUIRE_BROWSER=1, so there the
test fails instead of skipping when the browser is missing.
"""
import io
import os
import shutil

import numpy as np
import pytest

from matcher_fixtures import write_images, write_weights

CHROMIUM = os.environ.get("GEOMATCH_CHROMIUM") or shutil.which("chromium") \
    or shutil.which("chromium-browser") or "/usr/bin/chromium"
REQUIRED = os.environ.get("GEOMATCH_REQUIRE_BROWSER") == "1"


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if REQUIRED:
            pytest.fail("playwright is not installed (pip install -e '.[test]')")
        pytest.skip("playwright is not installed (optional test dependency)")
    if not os.path.exists(CHROMIUM):
        if REQUIRED:
            pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    return sync_playwright


def _click_points(rng, w, h, n):
    """n distinct source pixels spread over the image, corners included."""
    pts = {(0, 0), (w - 1, h - 1), (w - 1, 0), (0, h - 1)}
    while len(pts) < n:
        pts.add((int(rng.integers(0, w)), int(rng.integers(0, h))))
    return sorted(pts)


@pytest.mark.parametrize("preprocess,display_side", [("resize", 1024), ("pad", 50)])
def test_viewer_clicks_equal_matcher(tmp_path, monkeypatch, preprocess, display_side):
    """display_side 50: the embedded images are shown downscaled (as large
    photos are); the answers stay in full-resolution pixels."""
    sync_playwright = _browser_or_skip()
    import geomatch as gm
    import geomatch.match.viewer as viewer_mod
    from PIL import Image

    monkeypatch.setattr(viewer_mod, "DISPLAY_SIDE", display_side)
    weights = write_weights(str(tmp_path), "safetensors")
    src, trg = write_images(str(tmp_path), sizes=((97, 70), (83, 104)))
    m = gm.Matcher(weights, preprocess=preprocess, size=224 if preprocess == "resize" else 252)
    page_path = tmp_path / "viewer.html"
    m.viewer(src, trg).save(page_path)
    w, h = Image.open(src).size
    clicks = _click_points(np.random.default_rng(7), w, h, 24)

    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri())
            page.wait_for_selector(".gm-viewer[data-ready='1']", timeout=30000)
            canvas = page.locator("canvas.gm-src")
            box = canvas.bounding_box()
            for x, y in clicks:
                # the centre of image pixel (x, y) on the (possibly scaled) canvas
                page.mouse.click(box["x"] + (x + 0.5) * box["width"] / w,
                                 box["y"] + (y + 0.5) * box["height"] / h)
            items = page.locator("li.gm-match")
            assert items.count() == len(clicks)
            got_src, got = [], []
            for i in range(items.count()):
                li = items.nth(i)
                got_src.append([float(v) for v in li.get_attribute("data-src").split(",")])
                got.append([float(v) for v in li.get_attribute("data-match").split(",")])
            shot = page.locator(".gm-row").screenshot()
            if os.environ.get("GEOMATCH_SCREENSHOT_DIR"):
                page.screenshot(path=os.path.join(os.environ["GEOMATCH_SCREENSHOT_DIR"],
                                                  f"viewer-{preprocess}.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    # opened from disk, nothing else fetched (images and data are embedded)
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert got_src == [[float(x), float(y)] for x, y in clicks]

    got = np.array(got)
    want = m.match(src, trg, np.array(got_src), quantize="float16").points
    np.testing.assert_array_equal(got, want)          # pixel for pixel
    # the unrounded float32 features: report-only agreement, the page must be close
    full = m.match(src, trg, np.array(got_src)).points
    assert np.mean(np.all(full == got, axis=1)) >= 0.5

    img = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.float64)
    assert img.std() > 20                              # not blank: images and heatmap
    assert len(np.unique(img.reshape(-1, 3).astype(np.uint8), axis=0)) > 200


@pytest.mark.parametrize("attach_later", [False, True])
def test_fragment_runs_when_inserted_like_notebook_output(tmp_path, attach_later):
    """Jupyter front ends insert an output's HTML into the page (scripts made
    executable), sometimes into an element attached only later: the viewer
    (Viewer._repr_html_, what matcher.show displays) starts either way."""
    sync_playwright = _browser_or_skip()
    import geomatch as gm

    weights = write_weights(str(tmp_path), "safetensors")
    src, trg = write_images(str(tmp_path))
    m = gm.Matcher(weights, size=112)
    fragment = m.viewer(src, trg)._repr_html_()
    want = m.match(src, trg, [[10, 20]], quantize="float16").points[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_content("<html><body><div id='out'></div></body></html>")
            page.evaluate("""([html, later]) => {
                const host = document.createElement('div');
                host.appendChild(document.createRange().createContextualFragment(html));
                const attach = () => document.getElementById('out').appendChild(host);
                if (later) setTimeout(attach, 300); else attach();
            }""", [fragment, attach_later])
            page.wait_for_selector(".gm-viewer[data-ready='1']", timeout=30000)
            got = page.evaluate("document.querySelector('.gm-viewer').geomatch.click(10, 20)")
        finally:
            browser.close()
    assert [got["x"], got["y"]] == list(want)
