"""Test set-up: an 8-device CPU platform, so sharded and unsharded paths both run."""

import os

# JAX_PLATFORMS before jax is imported anywhere; XLA_FLAGS and NPROC before its backend starts
# (score_jax.distributed imports jax but starts nothing). Flags already in XLA_FLAGS win.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402 - after the environment above

from score_jax import distributed  # noqa: E402

os.environ.update(distributed.emulated_cpu_env(8))


@pytest.fixture(scope="module")
def pool():
    """A two-worker code sandbox pool, shared by a test module's tests."""
    from score_jax.rewards import code

    with code.SandboxPool(2) as p:
        yield p


@pytest.fixture(scope="module")
def fallback_pool():
    """A one-worker pool without namespaces: the sandbox's fallback isolation tier."""
    from score_jax.rewards import code

    with code.SandboxPool(1, use_namespaces=False) as p:
        yield p
