"""Building the task in a multi-process job: process 0 first, failures reach every process."""

import jax
import pytest

from score_jax import config as config_lib
from score_jax import data, tasks


def _as_process(monkeypatch, index, calls, fail_on_zero=False):
    """Pretends to be process `index` of 2; any_process sees this process's flag or process 0's failure."""
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: index)

    def build(config, data_dir=None):
        calls.append(index)
        if fail_on_zero and index == 0:
            raise data.DataError("MATH files missing in /nowhere")
        return "task"

    monkeypatch.setattr(tasks, "build_task", build)

    def any_process(flag):
        calls.append("exchange")
        return flag or fail_on_zero

    monkeypatch.setattr(tasks.distributed, "any_process", any_process)


def test_process_zero_builds_and_the_others_follow(monkeypatch):
    config = config_lib.base_config()
    for index in (0, 1):
        calls = []
        _as_process(monkeypatch, index, calls)
        assert tasks.build_task_on_all_processes(config) == "task"
        assert calls == ([0, "exchange"] if index == 0 else ["exchange", 1])  # process 1 builds after process 0


def test_a_failure_on_process_zero_stops_every_process(monkeypatch):
    config = config_lib.base_config()
    calls = []
    _as_process(monkeypatch, 0, calls, fail_on_zero=True)
    with pytest.raises(data.DataError, match="MATH files missing in /nowhere"):
        tasks.build_task_on_all_processes(config)
    calls = []
    _as_process(monkeypatch, 1, calls, fail_on_zero=True)
    with pytest.raises(data.DataError, match="process 0 could not build the datasets"):
        tasks.build_task_on_all_processes(config)
    assert calls == ["exchange"]  # process 1 never started a build of its own


def test_single_process_builds_directly():
    config = config_lib.base_config()  # the synthetic task: generated in memory
    task = tasks.build_task_on_all_processes(config)
    assert task.name == "synthetic" and len(task.train) == config.data.synthetic_size
