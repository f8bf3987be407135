"""`load`: a dataset split as a random-access source of plain Python dicts.

Builds the TFDS dataset on first use, as `array_record` files that are read without TensorFlow.
A built dataset is reused: delete <data_dir>/<name>/<config> to rebuild from changed files.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from score_jax.data.hendrycks_math import Math
from score_jax.data.humaneval import HumanEval
from score_jax.data.mbpp import Mbpp
from score_jax.data.synthetic import Synthetic

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    builder.name: builder for builder in (Math, Mbpp, HumanEval, Synthetic)
}

# Our builders share names with TFDS's own (e.g. `mbpp`) but not features: keep them apart.
DEFAULT_DATA_DIR = os.environ.get("SCORE_JAX_DATA_DIR", str(pathlib.Path("~/.cache/score_jax/datasets").expanduser()))


class Source(Sequence):
    """A random-access dataset split: `len(source)` and `source[i]` -> dict of str/int/list."""

    def __init__(self, data_source: Sequence[Any], description: str):
        self._data_source = data_source
        self._description = description

    def __len__(self) -> int:
        return len(self._data_source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"{self._description} takes an integer index, not {index!r}.")
        if not -len(self) <= index < len(self):
            raise IndexError(f"Index {index} out of range for {self._description} ({len(self)}).")
        return _to_python(self._data_source[int(index) % len(self)])

    def __repr__(self) -> str:
        return f"Source({self._description}, {len(self)} examples)"


def builder(
    name: str, config: str | None = None, *, data_dir: str | os.PathLike[str] | None = None
) -> tfds.core.GeneratorBasedBuilder:
    """The named builder ("math", "mbpp", "humaneval", "synthetic"), writing array_record files."""
    if name not in BUILDERS:
        raise ValueError(f"Unknown dataset {name!r}; choose from {sorted(BUILDERS)}.")
    cls = BUILDERS[name]
    configs = [c.name for c in cls.BUILDER_CONFIGS]
    if config is not None and config not in configs:
        raise ValueError(f"Dataset {name!r} has no config {config!r}; choose from {configs}.")
    return cls(config=config, data_dir=os.fspath(data_dir or DEFAULT_DATA_DIR), file_format="array_record")


def load(
    name: str,
    config: str | None = None,
    split: str = "train",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
) -> Source:
    """One split of a dataset, built first if needed.

    Args:
      name: "math", "mbpp", "humaneval" or "synthetic".
      config: the builder config ("standard"/"prm800k", "full"/"sanitized", "easy"/"medium"/
        "hard"); None for the first one.
      split: e.g. "train", "test", "validation", "prompt".
      data_dir: where built datasets live; default $SCORE_JAX_DATA_DIR or
        ~/.cache/score_jax/datasets.
      manual_dir: the folder holding the user's downloaded files; default
        <data_dir>/downloads/manual. Each builder's MANUAL_DOWNLOAD_INSTRUCTIONS says what goes in.

    Raises:
      DataError: the user's files are missing or malformed.
    """
    dataset = builder(name, config, data_dir=data_dir)
    dataset.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=os.fspath(manual_dir) if manual_dir is not None else None
        )
    )
    splits = list(dataset.info.splits)
    if split not in splits:
        raise ValueError(f"{name}/{dataset.builder_config.name} has no split {split!r}: {splits}.")
    return Source(dataset.as_data_source(split=split), f"{name}/{dataset.builder_config.name}:{split}")


def _to_python(value: Any) -> Any:
    """TFDS's decoded values (bytes, numpy scalars and arrays) as str, int, float and lists."""
    if isinstance(value, dict):
        return {key: _to_python(v) for key, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_to_python(v) for v in value]
    if isinstance(value, list):
        return [_to_python(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
