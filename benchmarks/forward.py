"""Forward-pass throughput: score_jax (jitted) against transformers (torch, CPU) on the same weights.

    python benchmarks/forward.py            # tiny_llama and llama_125m, about a minute on 2 CPU cores

For each config a random transformers model is built and saved, imported with
`load_hf_checkpoint` (so both sides hold the same weights), and both run a full-sequence forward
on the same batch, after one warm-up call. The last line printed is one JSON object with tokens/s
for each side and the largest logit difference between them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import jax
import numpy as np
import torch
import transformers

from score_jax.checkpoints import hf
from score_jax.model import get_preset, transformer

# (preset, batch, sequence length): sized so that the whole run stays near a minute on CPU.
CASES = (("tiny_llama", 8, 128), ("llama_125m", 2, 128))


def _time(fn, iters: int, min_seconds: float = 2.0) -> float:
    """Mean seconds per call of `fn` after one warm-up call: at least `iters` calls and `min_seconds`."""
    fn()
    calls, start = 0, time.perf_counter()
    while calls < iters or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def bench(preset: str, batch: int, seq: int, iters: int) -> dict:
    config = get_preset(preset)
    hf_config = transformers.AutoConfig.for_model(**hf.hf_config_from_model(config))
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32).eval()
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        config, params = hf.load_hf_checkpoint(directory)

    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (batch, seq)).astype(np.int32)
    valid = np.ones_like(tokens, bool)
    positions = np.broadcast_to(np.arange(seq, dtype=np.int32), tokens.shape)
    args = [jax.device_put(x) for x in (tokens, positions, valid)]

    def ours():
        return transformer.forward(config, params, *args).block_until_ready()

    t_tokens = torch.as_tensor(tokens, dtype=torch.long)

    def theirs():
        with torch.inference_mode():
            return model(input_ids=t_tokens, use_cache=False).logits

    jax_s, torch_s = _time(ours, iters), _time(theirs, iters)
    diff = float(np.abs(np.asarray(ours()) - theirs().numpy()).max())
    return {
        "config": preset,
        "params_millions": round(config.num_params() / 1e6, 1),
        "batch": batch,
        "seq": seq,
        "score_jax_tokens_per_s": round(batch * seq / jax_s, 1),
        "transformers_tokens_per_s": round(batch * seq / torch_s, 1),
        "speedup": round(torch_s / jax_s, 2),
        "max_abs_logit_diff": diff,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=3, help="timed forward calls per side, after one warm-up")
    args = parser.parse_args()
    results = []
    for case in CASES:
        results.append(bench(*case, iters=args.iters))
        print(results[-1], flush=True)
    print(
        json.dumps(
            {
                "benchmark": "forward",
                "jax_backend": jax.default_backend(),
                "jax": jax.__version__,
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
