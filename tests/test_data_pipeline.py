"""Prompt batches: sharding across processes, epochs, and exact resumption in a new process."""

import json
import subprocess
import sys

import pytest

from score_jax import data


class _Recording(list):
    """A list source that records which indices were read."""

    def __init__(self, items):
        super().__init__(items)
        self.read = []

    def __getitem__(self, index):
        self.read.append(index)
        return super().__getitem__(index)


def _source(n):
    return _Recording({"id": i} for i in range(n))


def _ids(batch):
    return [e["id"] for e in batch]


@pytest.mark.parametrize("num_examples, process_count", [(10, 3), (7, 7), (100, 8), (5, 8)])
def test_shard_bounds_partition(num_examples, process_count):
    bounds = [data.shard_bounds(num_examples, k, process_count) for k in range(process_count)]
    covered = [i for start, stop in bounds for i in range(start, stop)]
    assert covered == list(range(num_examples))


@pytest.mark.parametrize("shuffle", [True, False])
def test_two_processes_read_disjoint_covering_slices(shuffle):
    sources = [_source(40), _source(40)]
    seen = []
    for k, source in enumerate(sources):
        batches = data.PromptBatches(source, 4, seed=7, shuffle=shuffle, num_epochs=1, process_index=k, process_count=2)
        seen.append([i for batch in batches for i in _ids(batch)])
        assert batches.steps_per_epoch == 5
        assert sorted(source.read) == sorted(seen[k])  # reads only what it yields
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(40))
    if not shuffle:  # global batch b is [8b, 8b + 8); process k reads its k-th half
        assert seen == [
            [i for b in range(5) for i in range(8 * b, 8 * b + 4)],
            [i for b in range(5) for i in range(8 * b + 4, 8 * b + 8)],
        ]


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_global_batches_do_not_depend_on_process_count(process_count):
    single = data.PromptBatches(_source(50), 8, seed=3, num_epochs=2)
    want = [_ids(b) for b in single]
    parts = [
        data.PromptBatches(
            _source(50), 8 // process_count, seed=3, num_epochs=2, process_index=k, process_count=process_count
        )
        for k in range(process_count)
    ]
    got = [[i for part in step for i in _ids(part)] for step in zip(*parts)]
    assert got == want and len(want) == 2 * 6


def test_state_resumes_on_another_process_count():
    two = [data.PromptBatches(_source(40), 4, seed=9, process_index=k, process_count=2) for k in range(2)]
    for batches in two:
        for _ in range(3):
            next(batches)
    state = json.loads(json.dumps(two[0].get_state()))
    assert state == two[1].get_state()  # nothing process-specific: process 0's state serves all
    one = data.PromptBatches(_source(40), 8, seed=9)
    one.set_state(state)
    assert _ids(next(one)) == _ids(next(two[0])) + _ids(next(two[1]))


def test_uneven_data_gives_equal_steps_and_drops_remainder():
    per_process = []
    for k in range(3):
        batches = data.PromptBatches(_source(23), 3, num_epochs=1, process_index=k, process_count=3)
        per_process.append([_ids(b) for b in batches])
    assert [len(batches) for batches in per_process] == [2, 2, 2]  # 23 // 9 = 2 global batches
    flat = [i for batches in per_process for batch in batches for i in batch]
    assert len(set(flat)) == 18


def test_epochs_reshuffle_and_stop():
    batches = data.PromptBatches(_source(12), 4, seed=1, num_epochs=2)
    epochs = [[i for _ in range(3) for i in _ids(next(batches))] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(12))
    assert epochs[0] != epochs[1]
    with pytest.raises(StopIteration):
        next(batches)


def test_state_mismatch_is_refused():
    state = data.PromptBatches(_source(12), 4, seed=1).get_state()
    with pytest.raises(ValueError, match="'seed': \\(1, 2\\)"):
        data.PromptBatches(_source(12), 4, seed=2).set_state(state)
    with pytest.raises(ValueError, match="'num_examples'"):
        data.PromptBatches(_source(16), 4, seed=1).set_state(state)
    with pytest.raises(ValueError, match="'global_batch_size': \\(4, 8\\)"):
        data.PromptBatches(_source(16), 4, seed=1, process_count=2).set_state(state)


def test_too_small_for_a_batch():
    with pytest.raises(ValueError, match="no global batch of 4 on each of 2 processes \\(8 examples\\)"):
        data.PromptBatches(_source(7), 4, process_count=2)


_RESUME = """
import json, sys
from score_jax import data
data_dir, state = sys.argv[1], json.loads(sys.argv[2])
source = data.load("synthetic", "easy", "train", data_dir=data_dir)
batches = data.PromptBatches(source, 32, seed=5, process_index=1, process_count=2)
batches.set_state(state)
print(json.dumps([[e["id"] for e in next(batches)] for _ in range(4)]))
"""


def test_state_restores_exactly_in_a_new_process(tmp_path):
    source = data.load("synthetic", "easy", "train", data_dir=tmp_path)

    def make():
        return data.PromptBatches(source, 32, seed=5, process_index=1, process_count=2)

    uninterrupted = [_ids(b) for b, _ in zip(make(), range(7))]
    batches = make()
    assert batches.steps_per_epoch == 4  # 300 examples // (2 processes x 32), so 7 crosses an epoch
    for _ in range(3):
        next(batches)
    state = json.loads(json.dumps(batches.get_state()))
    assert (state["epoch"], state["position"]) == (0, 3)
    result = subprocess.run(
        [sys.executable, "-c", _RESUME, str(tmp_path), json.dumps(state)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == uninterrupted[3:]
