"""In headless Chromium (/usr/bin/chromium via Playwright): log in with a token, open a finished audit
from the audit list, see its pairs, play a clip, submit a review of a flag, and find it in the API."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.stack import running_stack
from tests.service.test_audit_end_to_end import run_audit_over_http

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DEADLINE_MS = 20_000
# an MP4 clip decodes and its playback position advances (a loaded fallback GIF does not count)
CLIP_PLAYS = ("() => [...document.querySelectorAll('video')].some(v => v.readyState >= 2 && !v.paused && "
              "v.videoWidth > 0 && v.currentTime > 0.2)")
H264 = "() => document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E\"')"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing (apt-get install chromium)")]


def test_reviewer_logs_in_opens_audit_plays_clip_and_reviews_a_flag(reference, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    expect = sync_api.expect
    with running_stack(tmp_path / "home", {}) as stack:
        audit_id, report = run_audit_over_http(stack, reference)
        flagged = [(p, f) for p in report["pairs"] for f in p["flags"]]
        assert flagged, "the reference audit raised no flag to review"
        pair, flag = flagged[0]
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(f"{stack.base_url}/audits/{audit_id}")
                expect(page).to_have_url(f"{stack.base_url}/login?next=/audits/{audit_id}")
                page.fill("input[name=token]", stack.token)
                page.click("button[type=submit]")
                expect(page).to_have_url(f"{stack.base_url}/audits/{audit_id}")
                cookie = next(c for c in page.context.cookies() if c["name"] == "quirkscope_session")
                assert cookie["httpOnly"] and stack.token not in cookie["value"]

                page.goto(f"{stack.base_url}/audits")
                page.click(f"text=#{audit_id}")
                for p in report["pairs"]:
                    expect(page.locator(f"#pair-{p['rank']} h2")).to_contain_text(p["a"])
                assert page.evaluate(H264), "this Chromium cannot play H.264 MP4, the report's clip format"
                page.evaluate("() => document.querySelectorAll('video').forEach(v => { v.muted = true; v.play(); })")
                page.wait_for_function(CLIP_PLAYS, timeout=DEADLINE_MS)

                form = page.locator(f"#pair-{pair['rank']} form.review-form").first
                form.locator("input[value=confirmed]").check()
                form.locator("textarea[name=note]").fill("watermark in the corner, see clip")
                form.locator("button[type=submit], input[type=submit]").first.click()
                expect(page).to_have_url(f"{stack.base_url}/audits/{audit_id}#pair-{pair['rank']}")
                expect(page.locator(f"#pair-{pair['rank']}")).to_contain_text("Reviewed: confirmed")
            finally:
                browser.close()
        status, shown = stack.request("GET", f"/api/v1/flags/{flag['id']}")
        assert status == 200
        assert shown["review"]["verdict"] == "confirmed"
        assert shown["review"]["note"] == "watermark in the corner, see clip"
