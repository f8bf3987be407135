"""Second attempts after first attempts the base model wrote (``rl.offline_first_attempts``).

Some of the paper's runs add, in Stage II, first attempts sampled from the base model (the frozen
reference) as extra prompts: the policy then also learns to correct mistakes it no longer makes
itself, and its ablation "without online turn-1 samples" measures what the online first attempts
add. Here each such episode keeps the base model's attempt 1 token for token, then the policy,
re-encoding the whole context with its own parameters (a cache the reference filled would hold the
reference's keys and values), samples attempt 2. The trainer rewards both attempts as in Stage II
(the shaping bonus needs r(y1)) but trains only attempt 2: attempt 1's tokens are the base
model's, not the policy's, so they get no gradient and no KL.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from score_jax.episodes import Episode, EpisodeSampler, strip_stop


def continue_from(sampler: EpisodeSampler, params: Any, first: Episode, instruction: str, rng: jax.Array) -> Episode:
    """Two-attempt episodes: attempt 1 is `first`'s (one attempt per row, any model's), attempt 2
    is sampled now under `params` after the correction instruction.

    Each row becomes one left-padded chunk, ``prompt, attempt 1, instruction chunk``, padded to a
    single fixed length (the largest prompt bucket plus an attempt plus the chunk, so it compiles
    once), then decoded. Row order, prompt indices and samples per prompt are `first`'s.
    """
    if first.num_attempts != 1:
        raise ValueError(f"continue_from needs one-attempt episodes, got {first.num_attempts} attempts")
    tok, settings = sampler.tokenizer, sampler.settings
    end_of_turn = tok.token_id(sampler.template.end_of_turn)
    after = {closed: sampler.template.continuation(tok, instruction, closed) for closed in (False, True)}
    rows, spans = [], []
    for b in range(first.tokens.shape[0]):
        attempt = first.tokens[b][first.attempt_masks[0, b]].tolist()
        prompt = first.tokens[b][first.valid[b] & ~first.attempt_masks[0, b]].tolist()
        rows.append(prompt + attempt + after[bool(attempt) and attempt[-1] == end_of_turn])
        spans.append((len(prompt), len(attempt)))
    length = max(settings.length_buckets) + settings.max_new_tokens + sampler.instruction_chunk_len(instruction, 2)
    fixed = settings.replace(length_buckets=(length,))
    params = sampler.sampler.place(params)
    logits, cache, (tokens, positions, valid) = sampler.sampler.prefill_prompts(params, rows, fixed)
    gen, _ = sampler.sampler.decode(params, cache, logits, valid.sum(axis=1), fixed, rng)

    batch, width = tokens.shape[0], length + gen.steps
    masks = np.zeros((2, batch, width), bool)
    logprobs = np.zeros((batch, width), np.float32)
    first_logprobs = first.logprobs[first.attempt_masks[0]]  # attempt-1 log-probs, row by row
    offset = 0
    for b, (prompt_len, attempt_len) in enumerate(spans):
        start = length - len(rows[b]) + prompt_len
        masks[0, b, start : start + attempt_len] = True
        logprobs[b, start : start + attempt_len] = first_logprobs[offset : offset + attempt_len]
        offset += attempt_len
    masks[1, :, length:] = gen.mask[:, : gen.steps]
    logprobs[:, length:] = np.where(gen.mask, gen.logprobs, 0.0)[:, : gen.steps]
    steps = np.arange(gen.steps)[None, :]
    texts = [tok.decode(strip_stop(gen.tokens[b, : gen.lengths[b]], fixed.stop_token_ids)) for b in range(batch)]
    return Episode(
        tokens=np.concatenate([tokens, gen.tokens[:, : gen.steps]], axis=1),
        positions=np.concatenate([positions, valid.sum(axis=1, keepdims=True) + steps], axis=1).astype(np.int32),
        valid=np.concatenate([valid, gen.mask[:, : gen.steps]], axis=1),
        attempt_masks=masks,
        logprobs=logprobs,
        lengths=np.stack([first.lengths[0], gen.lengths]),
        truncated=np.stack([first.truncated[0], gen.truncated]),
        texts=[list(first.texts[0]), texts],
        prompt_index=first.prompt_index,
        num_samples=first.num_samples,
    )
