"""``srmil report``: the HTML page, and the page as a real headless browser shows it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from report_helpers import cli

from srmil.cli.main import main

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SECTIONS = ("Summary", "Per-fold metrics", "Class map", "ROC and precision-recall",
            "Confusion matrix", "Per-class recall and precision (test)", "Calibration (test)",
            "Training curves", "Most confident test slides",
            "Least confident test slides", "Configuration")


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "rep"
    with pytest.raises(SystemExit) as e:
        main(["report", str(tiny_run["run"]), "--out", str(out), "--gallery", "2"])
    assert e.value.code == 0
    return out / "index.html"


def test_report_holds_every_section_with_embedded_images(capsys, report, tiny_run):
    page = report.read_text()
    for title in SECTIONS:
        assert title in page, title
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 5 + 4  # roc, pr, confusion, reliability, training; 2 + 2 heatmaps
    assert all(s.startswith("data:image/png;base64,") for s in srcs)  # self-contained
    assert '"model": "srmil"' in page and "clustered" in page
    assert "temperature" not in page.split("Calibration (test)")[1].split("<h2>")[0]
    for name in ("roc.png", "pr.png", "confusion.png", "training.png", "reliability.png"):
        assert (report.parent / "figures" / name).stat().st_size > 1000
    code, _, err = cli(capsys, "report", tiny_run["run"], "--out", report.parent)
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1


def test_report_of_a_directory_that_is_not_a_run_is_one_line(capsys, tmp_path):
    code, _, err = cli(capsys, "report", tmp_path)
    assert code == 2 and "not a run directory" in err


def test_report_opens_in_headless_chromium(report, tmp_path):
    """Every image decodes, no console error; the screenshot is kept in tmp_path."""
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium chromium-driver "
                    "(.ci/run does it); `playwright install` is not used")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright (Python) is missing: pip install -e '.[dev]'")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM,
                                    args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.resolve().as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
            title = page.title()
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert len(images) == 9
    assert all(done and width > 0 for _, done, width in images), images
    assert title.startswith("srmil report")
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size[0] == 1280 and im.size[1] > 2000  # the whole page, not a blank view
