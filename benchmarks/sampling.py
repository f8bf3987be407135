"""Generation speed: score_jax's cached decode against recomputation and against transformers.

    python benchmarks/sampling.py                      # tiny and llama_125m, batch 8, 128 + 128 tokens
    python benchmarks/sampling.py --configs tiny --new_tokens 32
    python benchmarks/sampling.py --configs llama3p2_1b --dtype bfloat16 --batch 1,64 \
        --no_transformers --no_cache_steps 0 --no_episodes          # on a GPU (random weights)

For each config, all in one run on the same machine: greedy tokens per second of
  score_jax_tok_s     Sampler.generate (prefill + while-loop decode on a donated KV cache)
  no_cache_tok_s      the same sampling step, recomputing the whole [B, P + N] buffer every step
  transformers_tok_s  transformers' generate(do_sample=False), torch on CPU, same shapes
and for two-attempt episodes (prompt, attempt, instruction, attempt) the seconds per batch with
attempt 2 continuing on the cache (episode_s_cache_reuse) or re-encoding the whole context
(episode_s_reprefill). Timings exclude compilation (one warm-up call each) and include the
prefill. The decode roofline (weights + KV cache bytes read per step over the measured memory
bandwidth, measured beside them) is reported too, and on a known accelerator the fraction of its
nominal memory bandwidth that the measured decode rate implies (`hbm_fraction`). Any model preset
name works in --configs (random weights of that shape). The last line printed is one JSON object.

On a shared 2-core machine every number moves with the other load; torch's generate suffers most
(its two OpenMP threads stall when a core is taken), so compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import time

import jax
import jax.numpy as jnp
import numpy as np

from score_jax import sampling
from score_jax.episodes import EpisodeSampler
from score_jax.model import Transformer, get_preset, init_params
from score_jax.model.config import ModelConfig
from score_jax.tokenizer import ByteTokenizer, get_chat_template

CONFIGS = {
    "tiny": get_preset(
        "tiny_llama",
        vocab_size=1024,
        d_model=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=32,
        mlp_dim=512,
        rope_llama3_scaling=None,
    ),
    "llama_125m": get_preset("llama_125m"),
}
INSTRUCTION = (
    "There might be an error in the solution above. Please correct the error, if any, and rewrite the solution."
)


class _WideByteTokenizer(ByteTokenizer):
    """Byte tokenizer that decodes ids beyond its 261 (a random model's output) as nothing."""

    def decode(self, ids):
        return super().decode([i for i in ids if int(i) < self.vocab_size])


def _timed(fn, repeats: int = 1, warmup=None) -> float:
    """Best wall time of `repeats` calls, after one warm-up (compilation) call."""
    (warmup or fn)()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# Nominal memory bandwidth (GB/s) by device kind, for `hbm_fraction`.
_PEAK_BANDWIDTH_GB_S = {
    "H100 80GB HBM3": 3350.0,
    "H100 PCIe": 2000.0,
    "H200": 4800.0,
    "TPU v5 lite": 819.0,
    "TPU v5p": 2765.0,
    "TPU v4": 1200.0,
}


def _peak_bandwidth_gb_s() -> float | None:
    kind = jax.devices()[0].device_kind
    return next((v for k, v in _PEAK_BANDWIDTH_GB_S.items() if k in kind), None)


def _config(name: str, dtype: str) -> ModelConfig:
    config = CONFIGS[name] if name in CONFIGS else get_preset(name)
    return config.replace(dtype=dtype, param_dtype=dtype)


def _bandwidth_gb_s() -> float:
    """Streaming bandwidth seen by a matrix-vector product (the decode step's access pattern)."""
    rows = 4096 if jax.devices()[0].platform == "cpu" else 65536  # 128 MB here, 2 GB past an accelerator's caches
    w = jnp.ones((rows, 8192), jnp.float32)
    x = jnp.ones((8, rows), jnp.float32)
    f = jax.jit(lambda x, w: x @ w)
    seconds = _timed(lambda: f(x, w).block_until_ready(), repeats=10)
    return w.size * 4 / seconds / 1e9


@functools.partial(jax.jit, static_argnames=("config", "settings", "prompt_len", "steps"))
def _no_cache_generate(
    params, tokens, valid, rng, *, config: ModelConfig, settings: sampling.SamplingConfig, prompt_len: int, steps: int
):
    """Greedy/sampled decoding that re-runs the model over the whole static buffer every step."""
    model = Transformer(config)
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)

    def body(i, carry):
        tokens, valid, rng = carry
        rng, key = jax.random.split(rng)
        hidden, _ = model.apply({"params": params}, tokens, positions, valid, return_hidden=True)
        last = jax.lax.dynamic_index_in_dim(hidden, prompt_len + i - 1, axis=1, keepdims=True)
        logits = model.apply({"params": params}, last, method=Transformer.logits)[:, 0]
        token, _ = sampling.sample_logits(logits, key, settings)
        tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, prompt_len + i))
        valid = jax.lax.dynamic_update_slice(valid, jnp.ones_like(token, bool)[:, None], (0, prompt_len + i))
        return tokens, valid, rng

    return jax.lax.fori_loop(0, steps, body, (tokens, valid, rng))[0]


def _transformers_tok_s(config: ModelConfig, prompts: np.ndarray, new_tokens: int, repeats: int) -> float:
    """Runs in a fresh process: torch's threads slow down many times over beside a live XLA client."""
    import torch
    import transformers

    torch.manual_seed(0)
    hf = transformers.LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        intermediate_size=config.mlp_dim,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_theta,
        max_position_embeddings=config.max_seq_len,
        tie_word_embeddings=config.tie_embeddings,
    )
    model = transformers.LlamaForCausalLM(hf).eval()
    ids = torch.as_tensor(prompts, dtype=torch.long)
    mask = torch.ones_like(ids)

    def run(n):
        with torch.inference_mode():
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=n,
                min_new_tokens=n,
                eos_token_id=None,
                pad_token_id=0,
            )

    return prompts.shape[0] * new_tokens / _timed(lambda: run(new_tokens), repeats)


def _in_subprocess(fn, *args):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def bench(
    name: str,
    batch: int,
    prompt_len: int,
    new_tokens: int,
    no_cache_steps: int,
    with_transformers: bool,
    with_episodes: bool = True,
    dtype: str = "float32",
) -> dict:
    config = _config(name, dtype)
    params = init_params(config, jax.random.key(0))
    rng = np.random.default_rng(0)
    prompts = rng.integers(5, config.vocab_size, (batch, prompt_len)).astype(np.int32)
    # A stop id outside the vocabulary: every row runs its full `new_tokens`.
    settings = sampling.SamplingConfig(
        max_new_tokens=new_tokens, greedy=True, length_buckets=(prompt_len,), stop_token_ids=(config.vocab_size,)
    )
    sampler = sampling.Sampler(config)
    repeats = 3 if config.num_params() < 10**7 else 1  # best of: the machine is shared and noisy
    out = {}

    def generate():
        gen = sampler.generate(params, prompts.tolist(), settings, jax.random.key(0))
        assert gen.lengths.min() == new_tokens

    out["score_jax_tok_s"] = batch * new_tokens / _timed(generate, repeats=repeats + 1)

    steps = min(no_cache_steps, new_tokens)
    if steps:
        out.update(_no_cache(params, prompts, config, settings, new_tokens, steps))
    if with_transformers:
        out["transformers_tok_s"] = _in_subprocess(_transformers_tok_s, config, prompts, new_tokens, repeats)
        out["speedup_vs_transformers"] = out["score_jax_tok_s"] / out["transformers_tok_s"]
    if with_episodes:
        out.update(_episodes(params, config, settings, batch, prompt_len, repeats))

    # Decode roofline: every step reads all weights but the input embedding, plus the KV cache.
    # Bandwidth is measured here, beside the timings, since other work on the machine changes it.
    bandwidth = _bandwidth_gb_s()
    out["bandwidth_gb_s"] = bandwidth
    itemsize = jnp.dtype(config.dtype).itemsize
    n_params = config.num_params() - config.vocab_size * config.d_model * (0 if config.tie_embeddings else 1)
    kv_bytes = 2 * config.num_layers * batch * (prompt_len + new_tokens) * config.num_kv_heads * config.head_dim
    step_bytes = (n_params + kv_bytes / 2) * itemsize  # on average half the cache is filled
    out["decode_roofline_tok_s"] = batch * bandwidth * 1e9 / step_bytes
    out["decode_bytes_per_step_mb"] = step_bytes / 1e6
    peak = _peak_bandwidth_gb_s()
    if peak:
        # Prefill is inside the timing, so this slightly understates the decode loop's own fraction.
        out["peak_bandwidth_gb_s"] = peak
        out["hbm_fraction"] = out["score_jax_tok_s"] / batch * step_bytes / (peak * 1e9)
    return out


def _no_cache(params, prompts, config, settings, new_tokens, steps) -> dict:
    batch, prompt_len = prompts.shape
    buffer = np.zeros((batch, prompt_len + new_tokens), np.int32)
    buffer[:, :prompt_len] = prompts
    valid = np.arange(prompt_len + new_tokens)[None, :] < prompt_len
    valid = np.broadcast_to(valid, buffer.shape)
    no_cache = functools.partial(
        _no_cache_generate,
        params,
        jnp.asarray(buffer),
        jnp.asarray(valid),
        jax.random.key(0),
        config=config,
        settings=settings,
        prompt_len=prompt_len,
        steps=steps,
    )
    # Every step costs the same (static buffer), so the steps timed extrapolate.
    return {
        "no_cache_tok_s": batch * steps / _timed(lambda: no_cache().block_until_ready()),
        "no_cache_steps_timed": steps,
    }


def _episodes(params, config, settings, batch, prompt_len, repeats) -> dict:
    out = {}
    tok = _WideByteTokenizer()
    episodes = EpisodeSampler(config, tok, get_chat_template("gemma"), settings.replace(length_buckets=(prompt_len,)))
    overhead = len(get_chat_template("gemma").prompt(tok, ""))
    first_turns = ["".join(chr(97 + (i * 7 + j) % 26) for j in range(prompt_len - overhead)) for i in range(batch)]
    for mode, reprefill in (("cache_reuse", False), ("reprefill", True)):
        out[f"episode_s_{mode}"] = _timed(
            lambda reprefill=reprefill: episodes.sample(
                params, first_turns, INSTRUCTION, rng=jax.random.key(0), reprefill=reprefill
            ),
            repeats,
        )
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="tiny,llama_125m")
    parser.add_argument("--batch", default="8", help="batch size, or several: 1,64")
    parser.add_argument("--prompt_len", type=int, default=128)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument(
        "--no_cache_steps",
        type=int,
        default=4,
        help="steps timed for the recomputing decoder on "
        "configs other than tiny (each costs a full forward over the buffer)",
    )
    parser.add_argument("--no_transformers", action="store_true")
    parser.add_argument("--no_episodes", action="store_true", help="skip the two-attempt episode timings")
    parser.add_argument("--dtype", default="float32", help="parameter and compute dtype: float32 or bfloat16")
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    result = {
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "dtype": args.dtype,
        "batch": batches[0] if len(batches) == 1 else batches,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
    }
    for name in args.configs.split(","):
        steps = args.new_tokens if name == "tiny" else args.no_cache_steps
        for batch in batches:
            key = name if len(batches) == 1 else f"{name}@{batch}"
            result[key] = bench(
                name,
                batch,
                args.prompt_len,
                args.new_tokens,
                steps,
                not args.no_transformers,
                not args.no_episodes,
                args.dtype,
            )
            print(key, json.dumps(result[key]), flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
