"""The report and the viewer in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``).

Pages must load with no console error, every plot must have drawn marks, the viewer's video must
play, seek, move the plot cursor, and a click on a plot must seek the video. ``make test`` installs
the browser when it is missing; where none can be installed these tests skip and say why.
"""

from __future__ import annotations

import io
import shutil
import time

import numpy as np
import pytest

from pipeline.viz.report import write_report
from pipeline.viz.viewer import page_name, write_viewer
from tests.viz_helpers import FPS, STEPS, browser_store

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _executables() -> tuple[str, str] | None:
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("selenium", reason="selenium is a dev dependency: pip install -e '.[dev]'")
    found = _executables()
    if found is None:
        pytest.skip("no Chromium and chromedriver on PATH: apt-get install chromium chromium-driver "
                    "(make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio",
                     "--window-size=1300,1000", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    store, _, metas = browser_store(root)
    write_report(store, str(root / "report.html"))
    viewer = write_viewer(store, root / "viewer")
    return root, viewer, {m.source_key: m for m in metas}


def _open(driver, path) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.as_uri())
    _wait(driver, "return document.readyState === 'complete'")


def _wait(driver, script: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def _errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


_MARKS = """return Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => [p.id,
  Array.from(p.querySelectorAll('.cartesianlayer .trace path')).filter(e => (e.getAttribute('d') || '').length > 8
  ).length])"""


def _variance(driver) -> float:
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("L"), np.float64)
    return float(image.var())


def test_report_draws_every_plot_with_no_console_error(browser, pages):
    root, _, _ = pages
    _open(browser, root / "report.html")
    expected = (root / "report.html").read_text().count('class="plotly-graph-div"')
    marks = dict(_wait(browser, _MARKS.replace("return ", "const m = ", 1) + "; return m.length && m"))
    assert len(marks) == expected == 9  # 4 totals, 2 length histograms, 2 distributions, real vs synthetic
    assert all(count > 0 for count in marks.values()), marks
    assert marks["totals-kind"] == 1 and marks["hist-length"] >= 1
    assert _errors(browser) == []
    assert _variance(browser) > 100  # bars, tables and thumbnails, not a blank page


@pytest.mark.parametrize("track", ["mjpeg", "av1"])  # an H.264 preview of the mjpeg track; AV1 as stored
def test_video_plays_seeks_and_drives_the_cursor(browser, pages, track):
    _, viewer, metas = pages
    _open(browser, viewer.pages[metas[track].episode_id])
    video = "document.querySelector('video.cam')"
    _wait(browser, f"return {video}.readyState >= 2")
    assert browser.execute_script(f"return [{video}.videoWidth, {video}.duration]") == [128, float(STEPS / FPS)]
    assert browser.execute_script(f"return {video}.play().then(() => 'playing', e => String(e))") == "playing"
    _wait(browser, f"return {video}.currentTime > 0.5")
    assert int(browser.execute_script("return document.body.dataset.cursorStep")) > 0
    browser.execute_script(f"{video}.pause(); {video}.currentTime = 2.0")
    _wait(browser, f"return !{video}.seeking && document.body.dataset.cursorStep === '20'")
    assert browser.execute_script(f"return {video}.currentTime") == 2.0
    assert _errors(browser) == []
    assert _variance(browser) > 100


def test_clicking_a_plot_seeks_the_video(browser, pages):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _, viewer, metas = pages
    _open(browser, viewer.pages[metas["h264"].episode_id])
    video = "document.querySelector('video.cam')"
    _wait(browser, f"return {video}.readyState >= 2")
    marks = dict(_wait(browser, _MARKS.replace("return ", "const m = ", 1) + "; return m.length && m"))
    assert sorted(marks) == ["plot-action", "plot-reward", "plot-state"] and all(marks.values()), marks
    area = browser.find_element(By.CSS_SELECTOR, "#plot-state rect.nsewdrag")
    ActionChains(browser).move_to_element_with_offset(area, int(area.size["width"] * 0.25), 0).click().perform()
    step = int(_wait(browser, "return document.body.dataset.cursorStep !== '0' && document.body.dataset.cursorStep"))
    assert 0 < step < STEPS
    _wait(browser, f"return !{video}.seeking")
    assert browser.execute_script(f"return {video}.currentTime") == pytest.approx((step + 0.5) / float(FPS), abs=1e-3)
    assert _errors(browser) == []


def test_index_filters_episodes_and_links_their_pages(browser, pages):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, viewer, metas = pages
    _open(browser, viewer.index)
    assert browser.find_element(By.ID, "shown").text == "3"
    for value, key in (("true", "mjpeg"), ("false", "h264"), ("unknown", "av1")):
        Select(browser.find_element(By.CSS_SELECTOR, 'select[data-key="success"]')).select_by_value(value)
        assert browser.find_element(By.ID, "shown").text == "1"
        visible = [row for row in browser.find_elements(By.CSS_SELECTOR, "tr.episode") if row.is_displayed()]
        link = visible[0].find_element(By.TAG_NAME, "a")
        assert link.text == metas[key].episode_id and link.get_attribute("href").endswith(
            f"episodes/{page_name(metas[key].episode_id)}.html")
    Select(browser.find_element(By.CSS_SELECTOR, 'select[data-key="success"]')).select_by_value("")
    Select(browser.find_element(By.CSS_SELECTOR, 'select[data-key="kind"]')).select_by_value("teleop")
    assert browser.find_element(By.ID, "shown").text == "3"
    assert _errors(browser) == []
