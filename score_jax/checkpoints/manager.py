"""Training checkpoints with Orbax: the last k steps, the best by training reward, and resume.

Each checkpoint holds two items: ``state`` (parameters, optimizer state, step; saved sharded,
each process writing its own shards) and ``extra`` (JSON: data-iterator state, RNG seed, stage,
config, metrics; written by process 0, read by all). With several hosts the directory must be
one they all reach: a shared filesystem or a ``gs://BUCKET/...`` URL (gcsfs installed, as
launch/requirements-tpu.txt does). Saves are asynchronous; a half-written step is never listed by Orbax, and a
step that fails to restore (corrupted files) is skipped with a warning in favour of the one
before it, so nothing already saved is lost to a bad write.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

log = logging.getLogger(__name__)

_ITEMS = ("state", "extra")


class CheckpointRestoreError(RuntimeError):
    """No usable checkpoint where one was required."""


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) to restore `tree`'s structure in place."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


class Checkpointer:
    """Latest-k and best checkpoints under ``directory`` (``directory/best`` for the best)."""

    def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True):
        self.directory = str(_resolve(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True
        )
        self._latest = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)
        best_options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=async_save, create=True)
        self._best = ocp.CheckpointManager(
            os.path.join(self.directory, "best"), options=best_options, item_names=_ITEMS
        )
        self.best_metric: float | None = None

    def save(self, step: int, state: Any, extra: dict, force: bool = False) -> None:
        """Starts an asynchronous save of `state` and `extra` at `step`."""
        self._latest.wait_until_finished()
        self._latest.save(step, args=_save_args(state, extra), force=force)

    def save_if_best(self, step: int, state: Any, extra: dict, metric: float) -> bool:
        """Saves under ``best/`` when `metric` beats every earlier one; returns whether it did."""
        if self.best_metric is not None and metric <= self.best_metric:
            return False
        self.best_metric = metric
        self._best.wait_until_finished()
        self._best.save(step, args=_save_args(state, dict(extra, best_metric=metric)), force=True)
        return True

    def steps(self) -> list[int]:
        return list(self._latest.all_steps())

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """(step, state, extra) of the newest checkpoint that restores, or None if there is none.

        A step that fails to restore is skipped with a warning and the one before it is tried.
        """
        self._latest.wait_until_finished()
        for step in sorted(self._latest.all_steps(), reverse=True):
            try:
                restored = self._latest.restore(step, args=_restore_args(abstract_state))
            except Exception as err:  # noqa: BLE001 - any unreadable checkpoint falls back
                log.warning(
                    "checkpoint at step %d in %s is unreadable (%s: %s); falling back to the previous one",
                    step,
                    self.directory,
                    type(err).__name__,
                    str(err)[:300],
                )
                continue
            return step, restored.state, dict(restored.extra)
        return None

    def wait(self) -> None:
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._latest.close()
        self._best.close()


def restore_from_path(path: str, abstract_state: Any, step: int | None = None) -> tuple[int, Any, dict]:
    """Restores a checkpoint from another run's checkpoint directory (e.g. Stage I's, for Stage II).

    `path` is a checkpoint directory (holding step folders), or one step folder; the newest
    readable step is used unless `step` is given.
    """
    path = _resolve(path)
    if not path.is_dir():
        raise CheckpointRestoreError(f"checkpoint path {path} does not exist")
    if step is None and path.name.isdigit() and (path / "state").is_dir():
        path, step = path.parent, int(path.name)
    manager = ocp.CheckpointManager(
        path, options=ocp.CheckpointManagerOptions(create=False, read_only=True), item_names=_ITEMS
    )
    steps = sorted(manager.all_steps(), reverse=True)
    if step is not None:
        steps = [step] if step in steps else []
    if not steps:
        raise CheckpointRestoreError(
            f"no checkpoint steps found in {path}" + (f" (asked for step {step})" if step else "")
        )
    errors = []
    for s in steps:
        try:
            restored = manager.restore(s, args=_restore_args(abstract_state))
            return s, restored.state, dict(restored.extra)
        except Exception as err:  # noqa: BLE001
            log.warning("checkpoint step %d in %s is unreadable: %s", s, path, err)
            errors.append(f"step {s}: {type(err).__name__}: {str(err)[:200]}")
    raise CheckpointRestoreError(f"no readable checkpoint in {path}: " + "; ".join(errors))


def _resolve(path: str) -> epath.Path:
    """A local path made absolute, or a URL (gs://BUCKET/..., shared by every host of a pod) as given."""
    return epath.Path(path) if "://" in str(path) else epath.Path(os.path.abspath(path))


def _save_args(state: Any, extra: dict):
    return ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra))


def _restore_args(abstract_state: Any):
    return ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore())
