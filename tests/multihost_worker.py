"""One process of a tiny multi-process training run (driven by tests/test_multihost.py).

    python tests/multihost_worker.py WORKDIR NUM_PROCESSES PROCESS_ID PORT TOTAL_STEPS [STOP_AFTER_STEP]
    python tests/multihost_worker.py WORKDIR NUM_PROCESSES PROCESS_ID PORT advantages

The 8 CPU devices of the mesh are split evenly over NUM_PROCESSES processes (1: the
single-process reference run, without `jax.distributed`). Stage II on mesh (1, 8, 1) under the
fsdp rules: the batch and every parameter's width are split over all 8 devices, so both cross
the process boundary. With STOP_AFTER_STEP the run stops right after that step's (synchronous)
checkpoint; otherwise each process writes the final parameters, whole, to
WORKDIR/params_<PROCESS_ID>.npz, and prints the first step it ran.
"""

import os
import sys

_NUM_PROCESSES = int(sys.argv[2])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // _NUM_PROCESSES}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from test_train import tiny_config  # noqa: E402

from score_jax import distributed, train  # noqa: E402


class _Stop(Exception):
    pass


def make_config(total_steps: int, num_processes: int, process_id: int, port: int):
    c = tiny_config(f"stage2:{total_steps}")
    c.mesh.shape = (1, 8, 1)
    c.mesh.rules = "fsdp"
    c.checkpoint.every_steps = 1
    c.checkpoint.async_save = False  # the stop must come after the step's checkpoint is on disk
    c.eval.num_examples = 8
    c.eval.batch_size = 8
    c.log_every_steps = 1
    if num_processes > 1:
        c.distributed.coordinator_address = f"127.0.0.1:{port}"
        c.distributed.num_processes = num_processes
        c.distributed.process_id = process_id
        c.distributed.cpu_collectives = "gloo"
    return c


def print_advantages(config):
    """Prints this process's block of `train.global_advantages` for returns [[1,1,1,1,0,0,0,0]] (reinforce)."""
    import json

    from score_jax import sharding

    mesh, rules = sharding.make_mesh(config.mesh.shape), sharding.resolve_rules(config.mesh.rules)
    index, count = distributed.batch_slot(mesh, rules)
    returns = np.array([[1, 1, 1, 1, 0, 0, 0, 0], [0, 1, 0, 1, 0, 1, 1, 1]], np.float32)
    rows = returns.shape[1] // count
    local = returns[:, index * rows : (index + 1) * rows]
    advantages = train.global_advantages("reinforce", local, 4, mesh, rules)
    print("advantages " + json.dumps({"index": index, "rows": advantages.tolist()}), flush=True)


def main():
    workdir, process_id, port = sys.argv[1], int(sys.argv[3]), int(sys.argv[4])
    if sys.argv[5] == "advantages":
        config = make_config(1, _NUM_PROCESSES, process_id, port)
        distributed.initialize(**config.distributed)
        print_advantages(config)
        return
    total = int(sys.argv[5])
    stop_after = int(sys.argv[6]) if len(sys.argv) > 6 else None
    config = make_config(total, _NUM_PROCESSES, process_id, port)
    distributed.initialize(**config.distributed)
    assert jax.process_count() == _NUM_PROCESSES and jax.device_count() == 8

    def on_step_end(step, metrics):
        del metrics
        if step == stop_after:
            raise _Stop

    try:
        result = train.run(config, workdir, on_step_end=on_step_end)
    except _Stop:
        print(f"stopped after step {stop_after}", flush=True)
        return
    params = distributed.to_host(result.state.params)
    flat = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    np.savez(os.path.join(workdir, f"params_{process_id}.npz"), **flat)
    print(f"first step {result.history[0]['step']}", flush=True)


if __name__ == "__main__":
    main()
