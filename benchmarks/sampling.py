"""Generation speed: score_jax's cached decode against recomputation and against transformers.

    python benchmarks/sampling.py                      # tiny and llama_125m, batch 8, 128 + 128 tokens
    python benchmarks/sampling.py --configs tiny --new_tokens 32
    python benchmarks/sampling.py --configs llama3p2_1b --dtype bfloat16 --batch 1,64 \
        --no_transformers --no_cache_steps 0 --no_episodes          # on a GPU (random weights)
    python benchmarks/sampling.py --skew --configs tiny,llama_125m  # static vs slot-pool episodes

For each config, all in one run on the same machine: greedy tokens per second of
  score_jax_tok_s     Sampler.generate (prefill + while-loop decode on a donated KV cache)
  no_cache_tok_s      the same sampling step, recomputing the whole [B, P + N] buffer every step
  transformers_tok_s  transformers' generate(do_sample=False), torch on CPU, same shapes
and for two-attempt episodes (prompt, attempt, instruction, attempt) the seconds per batch with
attempt 2 continuing on the cache (episode_s_cache_reuse) or re-encoding the whole context
(episode_s_reprefill). Timings exclude compilation (one warm-up call each) and include the
prefill; decode_tok_s times the decode loop alone. The decode roofline (weights + KV cache bytes
read per step over the memory bandwidth measured beside them, the best of two measurements) is
reported with decode_roofline_fraction = decode_tok_s / roofline (tokens_sha256: a digest of the
greedy tokens, to check a speed change across commits left them alone), and on a known accelerator the
fraction of its nominal memory bandwidth that the decode rate implies (`hbm_fraction`). Any model preset
name works in --configs (random weights of that shape). The last line printed is one JSON object.

With --skew, instead: K-attempt episodes (4 x batch of them, greedy) whose attempts stop at
lengths drawn from a lognormal (median 0.15 and 95th percentile 0.9 of new_tokens; the same draws
for both samplers), sampled by `EpisodeSampler` (batch rows at a time, each attempt decoded to
its slowest row) and by `SlotEpisodeSampler` (a pool of batch slots, refilled as episodes end):
episodes_s, useful_tok_s (attempt tokens per second), cpu_seconds (this process's CPU time, all
threads: steadier than wall time under load), decode_steps and slot_utilisation (attempt tokens
over decode calls x rows; a pool slot that is taking in a prompt or an instruction idles in the
decode calls meanwhile), and episodes_s_ratio / cpu_seconds_ratio (pool over static).

On a shared 2-core machine every number moves with the other load; torch's generate suffers most
(its two OpenMP threads stall when a core is taken), so compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
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
from score_jax.slot_sampling import SlotEpisodeSampler
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
    return _wall_and_cpu(fn, repeats, warmup)[0]


def _wall_and_cpu(fn, repeats: int = 1, warmup=None) -> tuple[float, float]:
    """Best wall time and best CPU time (this process, all threads) of `repeats` calls, after one
    warm-up call. On a loaded machine CPU time moves much less than wall time: it counts the work
    done, not the waits for a core."""
    (warmup or fn)()
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu


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
    out = {"loadavg_before": _loadavg()}
    bandwidth_before = _bandwidth_gb_s()

    generated = {}

    def generate():
        generated["last"] = gen = sampler.generate(params, prompts.tolist(), settings, jax.random.key(0))
        assert gen.lengths.min() == new_tokens

    out["score_jax_tok_s"] = batch * new_tokens / _timed(generate, repeats=repeats + 1)
    # The greedy tokens' digest: equal across commits means a speed change left the output alone.
    tokens = np.asarray(generated["last"].tokens, np.int32)
    out["tokens_sha256"] = hashlib.sha256(tokens.tobytes()).hexdigest()[:16]
    out["decode_tok_s"] = batch * new_tokens / _decode_seconds(sampler, params, prompts, settings, repeats + 1)

    steps = min(no_cache_steps, new_tokens)
    if steps:
        out.update(_no_cache(params, prompts, config, settings, new_tokens, steps))
    if with_transformers:
        out["transformers_tok_s"] = _in_subprocess(_transformers_tok_s, config, prompts, new_tokens, repeats)
        out["speedup_vs_transformers"] = out["score_jax_tok_s"] / out["transformers_tok_s"]
    if with_episodes:
        out.update(_episodes(params, config, settings, batch, prompt_len, repeats))

    # Decode roofline: every step reads all weights but the input embedding, plus the KV cache.
    # Bandwidth is measured here, beside the timings, since other work on the machine changes it
    # (the best of two measurements, so load makes the fraction lower, not higher).
    bandwidth = max(_bandwidth_gb_s(), bandwidth_before)
    out["bandwidth_gb_s"] = bandwidth
    itemsize = jnp.dtype(config.dtype).itemsize
    n_params = config.num_params() - config.vocab_size * config.d_model * (0 if config.tie_embeddings else 1)
    kv_bytes = 2 * config.num_layers * batch * (prompt_len + new_tokens) * config.num_kv_heads * config.head_dim
    step_bytes = (n_params + kv_bytes / 2) * itemsize  # on average half the cache is filled
    out["decode_roofline_tok_s"] = batch * bandwidth * 1e9 / step_bytes
    out["decode_roofline_fraction"] = out["decode_tok_s"] / out["decode_roofline_tok_s"]
    out["decode_bytes_per_step_mb"] = step_bytes / 1e6
    peak = _peak_bandwidth_gb_s()
    if peak:
        # Prefill is inside the timing, so this slightly understates the decode loop's own fraction.
        out["peak_bandwidth_gb_s"] = peak
        out["hbm_fraction"] = out["decode_tok_s"] / batch * step_bytes / (peak * 1e9)
    out["loadavg_after"] = _loadavg()
    return out


def _decode_seconds(sampler, params, prompts, settings, repeats: int) -> float:
    """Best wall time of the decode loop alone (prefill excluded), after one warm-up call."""
    seconds = []
    for _ in range(repeats + 1):
        logits, cache, (_, _, valid) = sampler.prefill_prompts(params, prompts.tolist(), settings)
        jax.block_until_ready((logits, cache))
        t0 = time.perf_counter()
        sampler.decode(params, cache, logits, valid.sum(axis=1), settings, jax.random.key(0))  # returns on the host
        seconds.append(time.perf_counter() - t0)
    return min(seconds[1:])


def _loadavg() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (other processes slow every timing here)."""
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return []


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


def skew_lengths(rng: np.random.Generator, shape, max_new_tokens: int) -> np.ndarray:
    """Attempt lengths, lognormal with median 0.15 N and 95th percentile 0.9 N, clipped to [1, N]."""
    sigma = np.log(0.9 / 0.15) / 1.6448536  # the standard normal's 95th percentile
    draws = rng.lognormal(np.log(0.15 * max_new_tokens), sigma, shape)
    return np.clip(np.round(draws), 1, max_new_tokens).astype(np.int32)


class _ForcedStops(sampling.Sampler):
    """A static `Sampler` whose successive decode calls (attempt k of group g, in the order
    `EpisodeSampler.sample` makes them) stop rows at `stop_at[g, k]` [rows] tokens."""

    def __init__(self, config: ModelConfig, stop_at: np.ndarray):
        super().__init__(config)
        self.stop_at, self.calls = stop_at, 0

    def decode(self, *args, **kwargs):
        groups, attempts = self.stop_at.shape[:2]
        group, attempt = divmod(self.calls % (groups * attempts), attempts)
        self.calls += 1
        return super().decode(*args, stop_at=self.stop_at[group, attempt], **kwargs)


def bench_skew(
    name: str,
    batch: int,
    prompt_len: int,
    new_tokens: int,
    dtype: str,
    num_attempts: int,
    refill_chunk: int,
    refill_rows: int,
) -> dict:
    """Static against slot-pool episodes under length skew (module docstring), same draws, same tokens."""
    config = _config(name, dtype)
    params = init_params(config, jax.random.key(0))
    groups, tok, template = 4, _WideByteTokenizer(), get_chat_template("gemma")
    rows = groups * batch
    stop_at = skew_lengths(np.random.default_rng(0), (num_attempts, rows), new_tokens)
    settings = sampling.SamplingConfig(
        max_new_tokens=new_tokens,
        greedy=True,
        length_buckets=(prompt_len,),
        stop_token_ids=(config.vocab_size - 1,),  # forced (a natural one would show as a length mismatch)
    )
    overhead = len(template.prompt(tok, ""))
    first_turns = ["".join(chr(97 + (i * 7 + j) % 26) for j in range(prompt_len - overhead)) for i in range(rows)]
    static = EpisodeSampler(config, tok, template, settings)
    static.sampler = _ForcedStops(config, stop_at.reshape(num_attempts, groups, batch).swapaxes(0, 1))
    pool = SlotEpisodeSampler(config, tok, template, settings, refill_chunk=refill_chunk, refill_rows=refill_rows)
    run = dict(rng=jax.random.key(0), num_attempts=num_attempts, batches=groups)
    episodes = {}

    def sample(mode: str):
        if mode == "static":
            episodes[mode] = static.sample(params, first_turns, INSTRUCTION, **run)
        else:
            episodes[mode] = pool.sample(params, first_turns, INSTRUCTION, stop_at=stop_at, **run)

    repeats = 4 if config.num_params() < 10**7 else 1
    loadavg_before = _loadavg()
    timings = {mode: _wall_and_cpu(functools.partial(sample, mode), repeats) for mode in ("static", "slots")}
    seconds = {mode: wall for mode, (wall, _) in timings.items()}
    for mode, ep in episodes.items():
        np.testing.assert_array_equal(ep.lengths, stop_at, err_msg=f"{mode}: a row stopped on its own")
    assert episodes["static"].texts == episodes["slots"].texts, "static and slot-pool episodes differ"
    useful = int(stop_at.sum())
    # Static: each group decodes every attempt until its slowest row stops.
    static_slots = int(stop_at.reshape(num_attempts, groups, batch).max(axis=2).sum()) * batch
    out = {
        "loadavg_before": loadavg_before,
        "loadavg_after": _loadavg(),
        "episodes": rows,
        "pool_slots": batch,
        "num_attempts": num_attempts,
        "refill_chunk": refill_chunk,
        "refill_rows": refill_rows,
    }
    out["useful_tokens"] = useful
    out["mean_attempt_len"] = float(stop_at.mean())
    for mode, decoded in (("static", static_slots), ("slots", pool.last_stats["decoded_slots"])):
        out[mode] = {
            "seconds": seconds[mode],
            "cpu_seconds": timings[mode][1],
            "episodes_s": rows / seconds[mode],
            "useful_tok_s": useful / seconds[mode],
            "decoded_slots": decoded,
            "slot_utilisation": useful / decoded,
        }
    stats = pool.last_stats
    out["static"]["decode_steps"] = static_slots // batch
    out["slots"].update(loop_steps=stats["steps"], decode_steps=stats["decode_steps"], feed_steps=stats["feed_steps"])
    out["episodes_s_ratio"] = out["slots"]["episodes_s"] / out["static"]["episodes_s"]
    out["cpu_seconds_ratio"] = out["static"]["cpu_seconds"] / out["slots"]["cpu_seconds"]
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
    parser.add_argument("--skew", action="store_true", help="static vs slot-pool episodes under length skew")
    parser.add_argument("--attempts", type=int, default=2, help="--skew: attempts per episode")
    parser.add_argument("--refill_chunk", type=int, default=32, help="--skew: tokens a slot feeds per step")
    parser.add_argument("--refill_rows", type=int, default=2, help="--skew: slots fed per step")
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
            if args.skew:
                result[key] = bench_skew(
                    name,
                    batch,
                    args.prompt_len,
                    args.new_tokens,
                    args.dtype,
                    args.attempts,
                    args.refill_chunk,
                    args.refill_rows,
                )
                print(key, json.dumps(result[key]), flush=True)
                continue
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
