"""Multi-process set-up (JAX's multi-controller runtime) and process-local <-> global arrays.

Every process runs the same program. Each reads its own slice of the data, and global arrays
are assembled from the process-local pieces, so no process ever holds the whole batch.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from score_jax import sharding

log = logging.getLogger(__name__)


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
               local_device_ids: str = "", cpu_collectives: str = "") -> None:
    """Starts `jax.distributed` when running on several processes; a no-op for one.

    Sources, in order: explicit arguments (from the config), then the environment
    (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), then JAX's own
    auto-detection (Cloud TPU, SLURM, Open MPI), which needs no arguments at all.
    """
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    num_processes = num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0") or 0)
    if process_id < 0:
        process_id = int(os.environ.get("JAX_PROCESS_ID", "-1") or -1)
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    explicit = bool(coordinator_address) and num_processes > 1
    auto = _auto_detectable()
    if not explicit and not auto:
        return
    kwargs = {}
    if explicit:
        kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                      process_id=process_id if process_id >= 0 else None)
        if local_device_ids:
            kwargs["local_device_ids"] = [int(i) for i in local_device_ids.split(",")]
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())


def _auto_detectable() -> bool:
    """True on clusters JAX detects by itself (multi-host Cloud TPU, SLURM with several tasks)."""
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in os.environ:
        return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return "," in hosts


def global_batch(local: np.ndarray, mesh: Mesh, rules: sharding.Rules) -> jax.Array:
    """A global [batch, ...] array from this process's rows (batch split by the rules)."""
    target = sharding.data_sharding(mesh, rules, np.ndim(local))
    if jax.process_count() == 1:
        return jax.device_put(local, target)
    return jax.make_array_from_process_local_data(target, local)


def local_rows(array: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded global array, on the host."""
    if jax.process_count() == 1:
        return np.asarray(array)
    return np.asarray(multihost_utils.global_array_to_host_local_array(array, array.sharding.mesh,
                                                                       array.sharding.spec))


def all_gather(tree):
    """Gathers host values from every process (for metrics on process 0)."""
    if jax.process_count() == 1:
        return tree
    return multihost_utils.process_allgather(tree)
