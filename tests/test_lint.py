"""The tree is formatted and lint-clean under the repository's ruff settings (pyproject.toml)."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parent.parent


def _ruff(*args):
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_formatted():
    result = _ruff("format", "--check", ".")
    assert result.returncode == 0, "run `ruff format .`:\n" + result.stdout + result.stderr


def test_lint_clean():
    result = _ruff("check", "--output-format", "concise", ".")
    assert result.returncode == 0, "run `ruff check .`:\n" + result.stdout + result.stderr
