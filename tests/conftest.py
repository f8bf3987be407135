"""Test set-up: an 8-device CPU platform, so sharded and unsharded paths both run."""

import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402 - after the environment above


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
