"""The tree stays lint-clean: ``python -m ruff check .`` at the repository root, with the configuration in
pyproject.toml (``[tool.ruff]``: E, F, W, I at 120 columns, the Alembic revisions excluded), reports nothing.
Skipped only where ruff is not installed (``pip install -e .[dev]`` pins it)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_reports_nothing() -> None:
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (it is in the dev extra: pip install -e .[dev])")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", ".", "--no-cache"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"ruff check . found problems (exit {result.returncode}); "
                    f"`ruff check . --fix` fixes the import order and whitespace ones:\n"
                    f"{result.stdout}{result.stderr}", pytrace=False)
