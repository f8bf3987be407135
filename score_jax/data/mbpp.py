"""MBPP (Austin et al. 2021): Python tasks with assert-based tests, the paper's code training set.

Splits follow the dataset's own task_id ranges: prompt 1-10 (the few-shot pool), test 11-510,
validation 511-600, train 601-974. Config `full` (mbpp.jsonl) has 10 / 500 / 90 / 374 tasks;
config `sanitized` (sanitized-mbpp.json, the hand-checked subset) splits its 427 tasks by the same
ranges.

Each example: `task_id`, `text` (the task; `prompt` in the sanitized file), `code` (reference
solution), `test_list` (assert statements), `test_setup_code` (code to run before the asserts; in
the sanitized config, its `test_imports` joined by newlines), `challenge_test_list`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from score_jax.data import files
from score_jax.data.files import DataError

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put MBPP (Austin et al. 2021, CC BY 4.0) in the manual folder: <manual_dir>/mbpp.jsonl for the
`full` config and <manual_dir>/sanitized-mbpp.json for `sanitized`, both as published in the
google-research repository, folder mbpp/. See third_party/DATASETS.md.
"""

# Inclusive task_id ranges of each split, as published with the dataset.
SPLIT_TASK_IDS = {
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}


@dataclasses.dataclass
class MbppConfig(tfds.core.BuilderConfig):
    """Which MBPP file to read."""

    filename: str = "mbpp.jsonl"


class Mbpp(files.ManualBuilder, skip_registration=True):
    """MBPP from the user's files."""

    name = "mbpp"
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [
        MbppConfig(name="full", filename="mbpp.jsonl", description="974 tasks: 374 / 90 / 500 / 10."),
        MbppConfig(
            name="sanitized",
            filename="sanitized-mbpp.json",
            description="427 hand-verified tasks, split by the same task_id ranges.",
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "task_id": tfds.features.Scalar(dtype=np.int32),
                    "text": tfds.features.Text(),
                    "code": tfds.features.Text(),
                    "test_list": tfds.features.Sequence(tfds.features.Text()),
                    "test_setup_code": tfds.features.Text(),
                    "challenge_test_list": tfds.features.Sequence(tfds.features.Text()),
                }
            ),
            homepage="https://github.com/google-research/google-research/tree/master/mbpp",
            license="CC BY 4.0",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        filename = self.builder_config.filename
        path = files.find_file(
            files.manual_folder(dl_manager),
            [filename],
            what=f"MBPP file for config {self.builder_config.name!r}",
            instructions=MANUAL_DOWNLOAD_INSTRUCTIONS,
        )
        files.check_checksum("mbpp", self.builder_config.name, path)
        examples = read_sanitized(path) if filename.endswith(".json") else read_full(path)
        return {
            split: self._generate_examples([e for e in examples if first <= e["task_id"] <= last])
            for split, (first, last) in SPLIT_TASK_IDS.items()
        }

    def _generate_examples(self, examples: Iterable[dict[str, Any]]):
        for example in examples:
            yield example["task_id"], example


def read_full(path: pathlib.Path) -> list[dict[str, Any]]:
    """The tasks of mbpp.jsonl, sorted by task_id."""
    examples = []
    for line, record in files.read_jsonl(path):
        where = f"{path}:{line}"
        files.require_fields(
            record,
            {
                "task_id": int,
                "text": str,
                "code": str,
                "test_list": list,
                "test_setup_code": str,
                "challenge_test_list": list,
            },
            where,
        )
        examples.append(
            _example(
                record,
                where,
                text=record["text"],
                setup=record["test_setup_code"],
                challenge=_strings(record["challenge_test_list"], "challenge_test_list", where),
            )
        )
    return _sorted_unique(examples, path)


def read_sanitized(path: pathlib.Path) -> list[dict[str, Any]]:
    """The tasks of sanitized-mbpp.json, sorted by task_id."""
    records = files.read_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path} holds a {type(records).__name__}; expected a JSON list of tasks.")
    examples = []
    for number, record in enumerate(records):
        where = f"{path}[{number}]"
        if not isinstance(record, dict):
            raise DataError(f"{where} is a {type(record).__name__}; expected a JSON object.")
        files.require_fields(
            record,
            {"task_id": int, "prompt": str, "code": str, "test_list": list, "test_imports": list},
            where,
        )
        setup = "\n".join(_strings(record["test_imports"], "test_imports", where))
        examples.append(_example(record, where, text=record["prompt"], setup=setup, challenge=[]))
    return _sorted_unique(examples, path)


def _example(record: dict[str, Any], where: str, *, text: str, setup: str, challenge: list[str]) -> dict[str, Any]:
    """One task in the builder's fields, from either file's record (fields already type-checked)."""
    return {
        "task_id": _task_id(record["task_id"], where),
        "text": text,
        "code": record["code"],
        "test_list": _strings(record["test_list"], "test_list", where),
        "test_setup_code": setup,
        "challenge_test_list": challenge,
    }


def _task_id(task_id: int, where: str) -> int:
    first, last = SPLIT_TASK_IDS["prompt"][0], SPLIT_TASK_IDS["train"][1]
    if not first <= task_id <= last:
        raise DataError(f"{where}: task_id {task_id} is outside MBPP's range {first}-{last}.")
    return task_id


def _strings(values: list[Any], field: str, where: str) -> list[str]:
    if not all(isinstance(v, str) for v in values):
        raise DataError(f"{where}: field {field!r} must be a list of strings, got {values!r}.")
    return values


def _sorted_unique(examples: list[dict[str, Any]], path: pathlib.Path) -> list[dict[str, Any]]:
    examples.sort(key=lambda e: e["task_id"])
    for before, after in zip(examples, examples[1:]):
        if before["task_id"] == after["task_id"]:
            raise DataError(f"{path}: task_id {after['task_id']} appears more than once.")
    return examples
