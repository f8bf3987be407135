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


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One on-disk cache of compiled programs for the session and the processes its tests start.

    Many tests build the same tiny models and configs, and every `train.run` or `init_params` call
    jits fresh closures, which miss JAX's in-memory cache; on disk, identical programs compile once
    (a SIGKILLed run and its resume, say). A compiled program is the same whether loaded or built.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    path = str(tmp_path_factory.mktemp("jax_cache"))
    env = {"JAX_COMPILATION_CACHE_DIR": path, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2"}
    saved_env = {name: os.environ.get(name) for name in env}
    saved = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    os.environ.update(env)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    cc.reset_cache()  # JAX decides once, at its first compilation, whether to use the cache
    yield path
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])
    cc.reset_cache()
    for name, value in saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
