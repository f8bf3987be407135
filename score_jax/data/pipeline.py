"""Prompt batches for RL: seeded per-epoch shuffling, per-process shards, resumable state.

Every process computes the same permutation of the whole dataset for an epoch. Global batch b of
the epoch is ``permutation[b * G:(b + 1) * G]`` (G = batch_size * process_count), and process i
reads only the i-th contiguous part of it, so the global batch is the same whatever the number
of processes, the processes' parts are disjoint, and together they cover the epoch's batches.
Every process yields the same number of batches per epoch (the examples that do not fill a global
batch are dropped, different ones each epoch when shuffling), as SPMD training needs.

    batches = PromptBatches(source, batch_size=64, seed=0,
                            process_index=jax.process_index(), process_count=jax.process_count())
    for examples in batches:  # a list of `batch_size` example dicts
        ...
    state = batches.get_state()  # JSON-serialisable; save it with the checkpoint

`set_state(state)` on an iterator over the same data, seed and global batch size resumes at the
next batch. The state does not depend on the process: every process restores the one process 0
saved, and a run may resume on another number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

_STATE_VERSION = 2  # 2: global batches are contiguous in the permutation


def shard_bounds(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
    """[start, stop) of process `process_index`'s slice: slices are disjoint and cover the range."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count}).")
    return (
        num_examples * process_index // process_count,
        num_examples * (process_index + 1) // process_count,
    )


class PromptBatches(Iterator[list[dict[str, Any]]]):
    """Iterates over per-process batches of examples from a random-access source.

    Args:
      source: `len()` and `[i]` -> example dict, such as `score_jax.data.load(...)`.
      batch_size: examples per batch on this process; the global batch is
        batch_size * process_count.
      seed: seeds each epoch's permutation; the same on every process.
      shuffle: permute each epoch; if False, epochs go in source order.
      num_epochs: stop after this many epochs; None repeats forever.
      process_index: which contiguous part of each global batch this process reads, e.g.
        `jax.process_index()` (the trainer passes `score_jax.distributed.batch_slot`: the part
        of a batch-sharded global array that this process's devices hold).
      process_count: parts per global batch, e.g. `jax.process_count()`.

    Attributes:
      steps_per_epoch: batches each process yields per epoch.
    """

    def __init__(
        self,
        source: Sequence[dict[str, Any]],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_epochs: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
    ):
        shard_bounds(len(source), process_index, process_count)  # Validates the indices.
        if batch_size < 1 or len(source) < batch_size * process_count:
            raise ValueError(
                f"{len(source)} examples give no global batch of {batch_size} on each of "
                f"{process_count} processes ({batch_size * process_count} examples)."
            )
        self.steps_per_epoch = len(source) // (batch_size * process_count)
        self._source = source
        self._batch_size = batch_size
        self._seed = seed
        self._shuffle = shuffle
        self._num_epochs = num_epochs
        self._process_index = process_index
        self._process_count = process_count
        self._epoch = 0
        self._position = 0  # batches already yielded in this epoch
        self._order: np.ndarray | None = None  # the permutation of self._epoch

    def __iter__(self) -> PromptBatches:
        return self

    def __next__(self) -> list[dict[str, Any]]:
        if self._position == self.steps_per_epoch:
            self._epoch += 1
            self._position = 0
            self._order = None
        if self._num_epochs is not None and self._epoch >= self._num_epochs:
            raise StopIteration
        if self._order is None:
            self._order = self._permutation(self._epoch)
        global_batch = self._batch_size * self._process_count
        start = self._position * global_batch + self._process_index * self._batch_size
        indices = self._order[start : start + self._batch_size]
        self._position += 1
        return [self._source[int(i)] for i in indices]

    def _permutation(self, epoch: int) -> np.ndarray:
        num_examples = len(self._source)
        if self._shuffle:
            return np.random.default_rng([self._seed, epoch]).permutation(num_examples)
        return np.arange(num_examples)

    def _config(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "num_examples": len(self._source),
            "global_batch_size": self._batch_size * self._process_count,
            "seed": self._seed,
            "shuffle": self._shuffle,
        }

    def get_state(self) -> dict[str, Any]:
        """Where the iterator is: JSON-serialisable, for `set_state`."""
        return {**self._config(), "epoch": self._epoch, "position": self._position}

    def set_state(self, state: dict[str, Any]) -> None:
        """Resumes from `get_state()` of an iterator over the same data and global batches.

        The state may come from any process of a run with any number of processes, as long as
        the global batch size (batch_size * process_count) is the same.

        Raises:
          ValueError: the state comes from an iterator with other data, global batch size, seed
            or shuffling (or an older state version), which would not resume the same sequence.
        """
        differing = {key: (state.get(key), value) for key, value in self._config().items() if state.get(key) != value}
        if differing:
            raise ValueError(f"Iterator state does not match this iterator, (saved, current): {differing}.")
        if not 0 <= state["position"] <= self.steps_per_epoch or state["epoch"] < 0:
            raise ValueError(
                f"Iterator state has epoch {state['epoch']}, position {state['position']}; "
                f"position must be in [0, {self.steps_per_epoch}]."
            )
        self._epoch = state["epoch"]
        self._position = state["position"]
        self._order = None
