"""Achieved FLOP/s of the jitted SCoRe train step against a plain matmul on the same machine.

    python benchmarks/train_step.py [--preset=llama_125m] [--batch=8] [--seq=128]

The train step is the real one (`score_jax.rl.train_step`): policy forward and backward, frozen
reference forward, per-attempt KL, REINFORCE loss, Adam update. Its FLOPs are counted from the
model shape (4x the forward FLOPs per token: forward + backward for the policy, forward for the
reference). The matmul baseline is one fp32 [tokens, d_model] x [d_model, mlp_dim] product.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np


def _time(fn, *args, min_seconds: float = 2.0) -> float:
    """Seconds per call after a warm-up call (blocking on the result)."""
    jax.block_until_ready(fn(*args))
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds or calls < 3:
        jax.block_until_ready(fn(*args))
        calls += 1
    return (time.perf_counter() - start) / calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="llama_125m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    from score_jax.model import get_preset, init_params
    from score_jax.rl import train_step as step_lib

    config = get_preset(args.preset, dtype=args.dtype, param_dtype="float32")
    params = init_params(config, jax.random.key(0))
    ref_params = jax.tree.map(jnp.copy, params)
    tx = step_lib.make_optimizer(1e-5, 1, 100)
    state = step_lib.init_train_state(params, tx)
    b, t = args.batch, args.seq
    rng = np.random.default_rng(0)
    masks = np.zeros((b, 2, t), np.float32)
    masks[:, 0, t // 4:t // 2] = 1
    masks[:, 1, 3 * t // 4:] = 1
    batch = {
        "tokens": jnp.asarray(rng.integers(0, config.vocab_size, (b, t)), jnp.int32),
        "positions": jnp.tile(jnp.arange(t, dtype=jnp.int32), (b, 1)),
        "valid": jnp.ones((b, t), bool),
        "attempt_masks": jnp.asarray(masks),
        "advantages": jnp.asarray(rng.normal(size=(b, 2)), jnp.float32),
    }
    step = step_lib.make_train_step(config, config, tx)
    kl_weights = jnp.asarray([0.1, 0.01])
    holder = {"state": state}

    def run_step():
        holder["state"], out = step(holder["state"], ref_params, batch, kl_weights)
        return out["loss/pg"]

    step_s = _time(run_step)
    step_flops = 4.0 * config.flops_per_token(t) * b * t

    x = jnp.asarray(rng.normal(size=(b * t, config.d_model)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(config.d_model, config.mlp_dim)), jnp.float32)
    matmul = jax.jit(lambda a, c: a @ c)
    matmul_s = _time(matmul, x, w)
    matmul_flops = 2.0 * b * t * config.d_model * config.mlp_dim

    result = {
        "preset": args.preset, "batch": b, "seq": t, "dtype": args.dtype, "devices": jax.device_count(),
        "platform": jax.devices()[0].platform,
        "train_step_s": step_s, "train_step_flops_per_s": step_flops / step_s,
        "matmul_flops_per_s": matmul_flops / matmul_s,
        "ratio": (step_flops / step_s) / (matmul_flops / matmul_s),
        "tokens_per_s": b * t / step_s,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
