"""Browser tests: pages opened in a real headless Chromium (skipped where /usr/bin/chromium is absent)."""
