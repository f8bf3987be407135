"""Achieved FLOP/s of the jitted SCoRe train step against a plain matmul on the same machine.

    python benchmarks/train_step.py [--preset=llama_125m] [--batch=8] [--seq=128]
    python benchmarks/train_step.py --preset=llama3p2_1b --dtype=bfloat16 --batch=16 --seq=1024 \
        --remat_policy=dots_no_batch --logits_chunk_tokens=4096      # MFU on a GPU
    python benchmarks/train_step.py --lora_rank=16                   # the same step under LoRA

The train step is the real one (`score_jax.rl.train_step`): policy forward and backward, frozen
reference forward, per-attempt KL, REINFORCE loss, Adam update. Its FLOPs are counted from the
model shape (4x the forward FLOPs per token: forward + backward for the policy, forward for the
reference; causal attention counted over the average context, t/2). The matmul baseline is one
[tokens, d_model] x [d_model, mlp_dim] product in the compute dtype. On a known accelerator (or
with --peak_flops) the model FLOPs utilisation `mfu` is reported too. Parameters and optimizer
state stay float32 (mixed precision): --dtype sets the compute dtype.

With --lora_rank=R the step is LoRA's (`score_jax.model.lora`): the state holds rank-R adapters on
every projection and their Adam moments, and the frozen base (--base_dtype) is both the policy's
base and the reference, one copy. FLOPs are counted as for full training (the adapters' own are
small; the base's weight gradients are not computed, so the real work is about 2/3 of it). Memory
per device is the compiler's figure for the step (arguments, outputs not donated, temporaries),
and the device's own peak where it reports one (GPUs, TPUs). The last line printed is one JSON
object.
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


# Dense bf16 peak FLOP/s by device kind, for MFU.
_PEAK_BF16_FLOPS = {
    "H100 80GB HBM3": 989e12,
    "H100 PCIe": 756e12,
    "H200": 989e12,
    "TPU v5 lite": 197e12,
    "TPU v5p": 459e12,
    "TPU v4": 275e12,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="llama_125m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--dtype", default="float32", help="compute dtype (parameters stay float32)")
    parser.add_argument("--remat_policy", default="none", help="none, full, dots, dots_no_batch")
    parser.add_argument("--scan_layers", action="store_true")
    parser.add_argument("--attention_impl", default="xla", help="xla, or cudnn (fused attention, NVIDIA GPUs)")
    parser.add_argument("--logits_chunk_tokens", type=int, default=0, help="0: whole [B, T, V] logits at once")
    parser.add_argument("--microbatches", type=int, default=1)
    parser.add_argument("--peak_flops", type=float, default=0.0, help="per device; 0: by device kind if known")
    parser.add_argument("--lora_rank", type=int, default=0, help="LoRA adapters of this rank; 0: train every weight")
    parser.add_argument("--lora_alpha", type=float, default=16.0)
    parser.add_argument("--base_dtype", default="float32", help="LoRA: the frozen base's stored dtype")
    args = parser.parse_args()

    from score_jax import compile_check
    from score_jax.model import get_preset, init_params, lora
    from score_jax.model.config import LoraConfig
    from score_jax.rl import train_step as step_lib

    base_config = get_preset(
        args.preset,
        dtype=args.dtype,
        param_dtype=args.base_dtype if args.lora_rank else "float32",
        remat_policy=args.remat_policy,
        scan_layers=args.scan_layers,
        attention_impl=args.attention_impl,
    )
    params = init_params(base_config, jax.random.key(0))
    tx = step_lib.make_optimizer(1e-5, 1, 100)
    if args.lora_rank:
        config = base_config.replace(lora=LoraConfig(rank=args.lora_rank, alpha=args.lora_alpha))
        ref_params = params  # the reference is the base itself
        state = step_lib.init_train_state(lora.init_adapters(config, jax.random.key(1)), tx)
    else:
        config = base_config
        ref_params = jax.tree.map(jnp.copy, params)
        state = step_lib.init_train_state(params, tx)
    ref_config = base_config.replace(remat_policy="none")
    b, t = args.batch, args.seq
    rng = np.random.default_rng(0)
    masks = np.zeros((b, 2, t), np.float32)
    masks[:, 0, t // 4 : t // 2] = 1
    masks[:, 1, 3 * t // 4 :] = 1
    batch = {
        "tokens": jnp.asarray(rng.integers(0, config.vocab_size, (b, t)), jnp.int32),
        "positions": jnp.tile(jnp.arange(t, dtype=jnp.int32), (b, 1)),
        "valid": jnp.ones((b, t), bool),
        "attempt_masks": jnp.asarray(masks),
        "advantages": jnp.asarray(rng.normal(size=(b, 2)), jnp.float32),
    }
    step = step_lib.make_train_step(
        config, ref_config, tx, num_microbatches=args.microbatches, logits_chunk_tokens=args.logits_chunk_tokens
    )
    kl_weights = jnp.asarray([0.1, 0.01])
    compiled = step.lower(state, ref_params, batch, kl_weights).compile()
    memory = compile_check.step_report("train_step", "", compiled, 0.0, 0).peak_bytes
    holder = {"state": state}

    def run_step():
        holder["state"], out = step(holder["state"], ref_params, batch, kl_weights)
        return out["loss/pg"]

    step_s = _time(run_step)
    step_flops = step_lib.step_flops(config, b, t)

    x = jnp.asarray(rng.normal(size=(b * t, config.d_model)), args.dtype)
    w = jnp.asarray(rng.normal(size=(config.d_model, config.mlp_dim)), args.dtype)
    matmul = jax.jit(lambda a, c: a @ c)
    matmul_s = _time(matmul, x, w)
    matmul_flops = 2.0 * b * t * config.d_model * config.mlp_dim

    result = {
        "preset": args.preset,
        "batch": b,
        "seq": t,
        "dtype": args.dtype,
        "remat_policy": args.remat_policy,
        "attention_impl": args.attention_impl,
        "logits_chunk_tokens": args.logits_chunk_tokens,
        "devices": jax.device_count(),
        "platform": jax.devices()[0].platform,
        "lora_rank": args.lora_rank,
        "trained_params": sum(x.size for x in jax.tree.leaves(state.params)),
        "step_memory_bytes_per_device": memory,
        "train_step_s": step_s,
        "train_step_flops_per_s": step_flops / step_s,
        "matmul_flops_per_s": matmul_flops / matmul_s,
        "ratio": (step_flops / step_s) / (matmul_flops / matmul_s),
        "tokens_per_s": b * t / step_s,
    }
    kind = jax.devices()[0].device_kind
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        result["device_peak_bytes"] = stats["peak_bytes_in_use"]
    peak = args.peak_flops or next((v for k, v in _PEAK_BF16_FLOPS.items() if k in kind), 0.0)
    if peak:
        result.update(
            device_kind=kind,
            peak_flops=peak,
            mfu=step_flops / step_s / peak,
            matmul_fraction_of_peak=matmul_flops / matmul_s / peak,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
