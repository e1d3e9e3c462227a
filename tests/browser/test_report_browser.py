"""Opens the static audit report in headless Chromium from file:// and checks it works offline.

Uses the system Chromium at /usr/bin/chromium (Debian package ``chromium``) through the playwright Python
package; no browser is downloaded. Skipped, with the reason, when that binary is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures_report import build_sample_report
from workers.audit.report_html import write_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}
PLAY_DEADLINE_MS = 20_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"{CHROMIUM} not installed (Debian: apt-get install chromium)")

VIDEO_PLAYS = "() => [...document.querySelectorAll('video')].some(v => v.readyState >= 2)"
GIF_SHOWS = ("() => [...document.querySelectorAll('img.clip__gif')]"
             ".some(i => i.complete && i.naturalWidth > 0)")
BROKEN_IMAGES = "() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"


def test_report_opens_offline_in_chromium_shows_every_pair_and_plays_clips(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    report = build_sample_report(tmp_path / "report")
    page_path = write_report(report, tmp_path / "report")
    screenshot = tmp_path / "report.png"
    remote_requests: list[str] = []
    failed_requests: list[str] = []

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("request", lambda r: None if r.url.startswith(("file:", "data:"))
                    else remote_requests.append(r.url))
            page.on("requestfailed", lambda r: failed_requests.append(f"{r.url}: {r.failure}"))
            page.goto(page_path.as_uri(), wait_until="load")

            assert page.title().startswith("QuirkScope audit a1")
            for pair in report["pairs"]:
                heading = page.locator(f"#pair-{pair['rank']} h2")
                sync_api.expect(heading).to_be_visible()
                sync_api.expect(heading).to_contain_text(pair["a"])
                sync_api.expect(heading).to_contain_text(pair["b"])
                for flag in pair["flags"]:
                    sync_api.expect(page.locator(f"#pair-{pair['rank']}")).to_contain_text(flag["message"])

            try:  # prefer the MP4 path; a Chromium built without H.264 falls back to the GIFs
                page.wait_for_function(VIDEO_PLAYS, timeout=PLAY_DEADLINE_MS)
            except sync_api.TimeoutError:
                assert page.evaluate(GIF_SHOWS), "no <video> reached readyState 2 and no GIF fallback loaded"
            page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=PLAY_DEADLINE_MS)
            assert page.evaluate(BROKEN_IMAGES) == []

            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()

    assert remote_requests == []
    assert failed_requests == []
    with Image.open(screenshot) as image:
        assert image.size[0] == VIEWPORT["width"] and image.size[1] > VIEWPORT["height"]
