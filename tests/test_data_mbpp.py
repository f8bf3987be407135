"""The MBPP builder: task_id split ranges, both files, errors."""

import json
import pathlib
import re
import shutil

import pytest

from score_jax import data

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "data" / "mbpp"


def _task_ids(tmp_path, config, split, manual_dir=FIXTURES):
    source = data.load("mbpp", config, split, data_dir=tmp_path / "tfds", manual_dir=manual_dir)
    return [e["task_id"] for e in source]


def test_full_splits_by_task_id(tmp_path):
    assert _task_ids(tmp_path, "full", "prompt") == [1, 2, 3, 4]
    assert _task_ids(tmp_path, "full", "test") == [11, 510]
    assert _task_ids(tmp_path, "full", "validation") == [511]
    assert _task_ids(tmp_path, "full", "train") == [601, 974]


def test_full_example_fields(tmp_path):
    test = data.load("mbpp", "full", "test", data_dir=tmp_path / "tfds", manual_dir=FIXTURES)
    assert test[0] == {
        "task_id": 11,
        "text": "Write a function to square a number.",
        "code": "def square(x):\r\n    return x * x",
        "test_list": ["assert square(3) == 9", "assert square(0) == 0", "assert square(-2) == 4"],
        "test_setup_code": "",
        "challenge_test_list": ["assert square(10**3) == 10**6"],
    }
    train = data.load("mbpp", "full", "train", data_dir=tmp_path / "tfds", manual_dir=FIXTURES)
    assert train[0]["test_setup_code"] == "import heapq"
    assert train[1]["challenge_test_list"] == []


def test_sanitized(tmp_path):
    assert _task_ids(tmp_path, "sanitized", "prompt") == [2, 3, 4]
    assert _task_ids(tmp_path, "sanitized", "test") == [11]
    assert _task_ids(tmp_path, "sanitized", "validation") == [511]
    train = data.load("mbpp", "sanitized", "train", data_dir=tmp_path / "tfds", manual_dir=FIXTURES)
    assert train[0]["text"] == "Write a function to sort a list with heapq."  # its `prompt` field
    assert train[0]["test_setup_code"] == "import heapq"  # its `test_imports`
    assert train[0]["challenge_test_list"] == []


def test_missing_file_names_it(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    shutil.copy(FIXTURES / "mbpp.jsonl", manual)
    with pytest.raises(data.DataError, match=re.escape(str(manual / "sanitized-mbpp.json"))):
        _task_ids(tmp_path, "sanitized", "train", manual)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("test_list"), "missing field 'test_list'"),
        (lambda r: r.update(task_id="11"), "field 'task_id' is '11', expected int"),
        (lambda r: r.update(task_id=975), "task_id 975 is outside MBPP's range 1-974"),
        (lambda r: r.update(test_list=[1]), "field 'test_list' must be a list of strings"),
    ],
)
def test_malformed_task_names_file_line_and_field(tmp_path, change, message):
    manual = tmp_path / "manual"
    manual.mkdir()
    lines = (FIXTURES / "mbpp.jsonl").read_text().splitlines()
    record = json.loads(lines[2])
    change(record)
    lines[2] = json.dumps(record)
    (manual / "mbpp.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(data.DataError, match=re.escape(f"{manual / 'mbpp.jsonl'}:3: {message}")):
        _task_ids(tmp_path, "full", "train", manual)


def test_duplicate_task_id(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    text = (FIXTURES / "mbpp.jsonl").read_text()
    (manual / "mbpp.jsonl").write_text(text + text.splitlines()[0] + "\n")
    with pytest.raises(data.DataError, match="task_id 11 appears more than once"):
        _task_ids(tmp_path, "full", "train", manual)


def test_sanitized_not_a_list(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "sanitized-mbpp.json").write_text('{"task_id": 2}')
    with pytest.raises(data.DataError, match="expected a JSON list of tasks"):
        _task_ids(tmp_path, "sanitized", "train", manual)
