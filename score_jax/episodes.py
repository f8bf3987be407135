"""SCoRe episodes: K attempts at a problem in one conversation, sampled on one key/value cache.

An episode is ``[prompt] [attempt 1] [instruction] [attempt 2] ... [attempt K]``: the prompt is the
chat template's first user turn and model opener, and each instruction chunk closes the model's
turn (unless the attempt already ended with the end-of-turn token), adds a user turn holding the
correction instruction (or that gap's own instruction: Self-Refine's feedback, then refinement) and
opens the next model turn. Attempt k + 1 is decoded on the cache that
already holds everything before it, so nothing is encoded twice (``reprefill=True`` re-encodes the
whole context before each later attempt instead, for comparison).

Cache layout (every row shares the slot layout; B rows, P prompt bucket, N max new tokens, C
instruction bucket, n_k slots used by attempt k = its longest row)::

    [0, P)                  prompt, left-padded with invalid slots
    [P, P + n_1)            attempt 1; a row's slots after its stop token are invalid (a gap)
    [.., .. + C)            instruction chunk, left-padded with invalid slots
    [.., .. + n_2)          attempt 2
    ...                     (attempts 3..K likewise), then unused invalid slots up to S

S = P + K N + (K - 1) C whatever the attempts' lengths, so the trainer sees fixed shapes. Each
row's position ids count only its own valid tokens, so gaps change nothing in the model's view.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from score_jax import sharding
from score_jax.model.config import ModelConfig
from score_jax.sampling import Sampler, SamplingConfig, chunk_positions, pad_left
from score_jax.tokenizer import ChatTemplate, Tokenizer

__all__ = ["Episode", "EpisodeSampler", "SamplingConfig", "cache_slots", "gap_instructions", "train_width"]

# The trainer pads an episode's used slots up to a multiple of this (few distinct train shapes).
TRAIN_WIDTH_MULTIPLE = 32


def cache_slots(prompt_len: int, num_attempts: int, max_new_tokens: int, chunk_len: int) -> int:
    """S = P + K N + (K - 1) C: the cache slots of a K-attempt episode (module docstring's layout)."""
    return prompt_len + num_attempts * max_new_tokens + (num_attempts - 1) * chunk_len


def train_width(used_slots: int, multiple: int = TRAIN_WIDTH_MULTIPLE) -> int:
    """Token slots per row in the train step: the used slots rounded up to `multiple`."""
    return -(-used_slots // multiple) * multiple


@dataclasses.dataclass
class Episode:
    """A batch of K-attempt episodes exactly as they sit in the cache (host numpy arrays).

    Rows are prompt-major: rows ``[i * num_samples, (i + 1) * num_samples)`` are the samples of
    prompt i. To score them, run one full forward over ``(tokens, positions, valid)``: the slot
    before each attempt token holds the row's previous token (gaps only ever precede an
    instruction chunk), so the logits at slot s - 1 score the token at slot s wherever
    `attempt_masks` is set.

    Fields (B rows, K attempts, S slots):
      tokens [B, S] int32: token ids (pad in invalid slots).
      positions [B, S] int32: position ids (each row counts its own valid tokens).
      valid [B, S] bool: the slot holds a real token.
      attempt_masks [K, B, S] bool: the slots of attempt k's tokens, its stop token included.
      logprobs [B, S] float32: log-probabilities the sampler drew each attempt token with (after
        temperature, top-k and top-p; greedy: the untempered model's); 0 outside attempts.
      lengths [K, B] int32: tokens in each attempt, stop token included.
      truncated [K, B] bool: the attempt hit max_new_tokens without a stop token.
      texts: texts[k][b] is attempt k of row b, decoded without its stop token.
      prompt_index [B] int32: the prompt each row answers.
      num_samples: samples per prompt.
    """

    tokens: np.ndarray
    positions: np.ndarray
    valid: np.ndarray
    attempt_masks: np.ndarray
    logprobs: np.ndarray
    lengths: np.ndarray
    truncated: np.ndarray
    texts: list[list[str]]
    prompt_index: np.ndarray
    num_samples: int

    @property
    def num_attempts(self) -> int:
        return self.attempt_masks.shape[0]

    @classmethod
    def concatenate(cls, parts: Sequence[Episode], pad_id: int = 0) -> Episode:
        """The rows of `parts` one after another (prompt indices continue from part to part).

        Parts may have different widths (their prompts fell in different length buckets): each is
        right-padded with invalid slots, which changes nothing for scoring since rows are
        independent and every row's slots keep their order.
        """
        if len({(p.num_attempts, p.num_samples) for p in parts}) != 1:
            raise ValueError("Episode.concatenate: parts differ in attempts or samples per prompt")
        width = max(p.tokens.shape[1] for p in parts)

        def cat(name: str, axis: int, fill=0) -> np.ndarray:
            arrays = [getattr(p, name) for p in parts]
            if name in ("tokens", "positions", "valid", "attempt_masks", "logprobs"):
                arrays = [
                    np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, width - a.shape[-1])], constant_values=fill)
                    for a in arrays
                ]
            return np.concatenate(arrays, axis=axis)

        offsets = np.cumsum([0] + [len(p.prompt_index) // p.num_samples for p in parts])
        return cls(
            tokens=cat("tokens", 0, pad_id),
            positions=cat("positions", 0),
            valid=cat("valid", 0, False),
            attempt_masks=cat("attempt_masks", 1, False),
            logprobs=cat("logprobs", 0),
            lengths=cat("lengths", 1),
            truncated=cat("truncated", 1, False),
            texts=[sum((p.texts[k] for p in parts), []) for k in range(parts[0].num_attempts)],
            prompt_index=np.concatenate([p.prompt_index + o for p, o in zip(parts, offsets)]),
            num_samples=parts[0].num_samples,
        )


class EpisodeSampler:
    """Samples K-attempt episodes for a model, tokenizer and chat template.

    Args:
      config: the model.
      tokenizer, template: how turns become token ids.
      settings: sampling settings for every attempt; without stop_token_ids, the template's are
        used.
      mesh, rules: run sharded on this mesh under this rule set (see `Sampler`).
    """

    def __init__(
        self,
        config: ModelConfig,
        tokenizer: Tokenizer,
        template: ChatTemplate,
        settings: SamplingConfig,
        *,
        mesh: jax.sharding.Mesh | None = None,
        rules: str | sharding.Rules = "fsdp",
    ):
        self.sampler = Sampler(config, mesh=mesh, rules=rules)
        self.tokenizer, self.template = tokenizer, template
        self.settings = self._with_stops(settings)
        self._end_of_turn = tokenizer.token_id(template.end_of_turn)

    def _with_stops(self, settings: SamplingConfig) -> SamplingConfig:
        if settings.stop_token_ids:
            return settings
        return settings.replace(stop_token_ids=self.template.stop_ids(self.tokenizer))

    def instruction_chunk_len(
        self, instruction: str | Sequence[str], num_attempts: int, settings: SamplingConfig | None = None
    ) -> int:
        """C: slots of the (bucketed) chunk between two attempts, the longest gap's; 0 for single attempts."""
        if num_attempts < 2:
            return 0
        settings = settings or self.settings
        return settings.bucket(
            max(
                len(self.template.continuation(self.tokenizer, text, closed))
                for text in gap_instructions(instruction, num_attempts)
                for closed in (False, True)
            )
        )

    def sample(
        self,
        params: Any,
        first_turns: Sequence[str],
        instruction: str | Sequence[str],
        *,
        rng: jax.Array,
        num_samples: int = 1,
        num_attempts: int = 2,
        reprefill: bool = False,
        settings: SamplingConfig | None = None,
        batches: int = 1,
    ) -> Episode:
        """Samples `num_samples` K-attempt episodes for each first-turn text.

        Args:
          params: model parameters.
          first_turns: one user text per problem (the prompt preset's first turn); with several
            processes, this process's block of problems (the call is collective and the episode
            holds this process's rows).
          instruction: the user turn between two attempts: one text for every gap (the
            correction instruction), or one text per gap, K - 1 of them (Self-Refine's feedback,
            then refinement, instructions).
          rng: PRNG key.
          num_samples: episodes per prompt (rows are prompt-major).
          num_attempts: K >= 1 (1: single-turn sampling).
          reprefill: re-encode the whole context from scratch before each later attempt instead of
            continuing on the cache (same episodes up to rounding, slower; for benchmarks).
          settings: overrides the sampler's settings for this call (e.g. greedy for evaluation).
          batches: sample the problems in this many equal groups, one after another, and
            concatenate the episodes: the KV cache then holds 1 / `batches` of the rows (its
            memory grows with rows x slots). Group g draws with ``fold_in(rng, g)``.
        """
        if num_attempts < 1:
            raise ValueError(f"num_attempts={num_attempts}: need at least one attempt")
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples}: need at least one sample per prompt")
        if not first_turns:
            raise ValueError("sample() needs at least one first-turn text")
        if batches < 1 or len(first_turns) % batches:
            raise ValueError(f"batches={batches} must be >= 1 and divide the {len(first_turns)} problems")
        gaps = gap_instructions(instruction, num_attempts)
        if batches > 1:
            size = len(first_turns) // batches
            parts = [
                self.sample(
                    params,
                    first_turns[g * size : (g + 1) * size],
                    instruction,
                    rng=jax.random.fold_in(rng, g),
                    num_samples=num_samples,
                    num_attempts=num_attempts,
                    reprefill=reprefill,
                    settings=settings,
                )
                for g in range(batches)
            ]
            return Episode.concatenate(parts, pad_id=(settings or self.settings).pad_id)
        settings = self.settings if settings is None else self._with_stops(settings)
        tok, sampler = self.tokenizer, self.sampler
        params = sampler.place(params)

        prompts = [self.template.prompt(tok, text) for text in first_turns]
        prompt_index = np.repeat(np.arange(len(prompts), dtype=np.int32), num_samples)
        rows = [prompts[i] for i in prompt_index]
        batch, steps = len(rows), settings.max_new_tokens
        after = [{closed: self.template.continuation(tok, text, closed) for closed in (False, True)} for text in gaps]
        chunk_len = self.instruction_chunk_len(instruction, num_attempts, settings)
        logits, cache, (chunk_tokens, chunk_pos, chunk_valid) = sampler.prefill_prompts(
            params, rows, settings, extra_slots=(num_attempts - 1) * (steps + chunk_len)
        )
        prompt_len, total = chunk_tokens.shape[1], cache.max_len

        # Host mirrors of what the cache holds, slot by slot.
        tokens = np.full((batch, total), settings.pad_id, np.int32)
        positions = np.zeros((batch, total), np.int32)
        valid = np.zeros((batch, total), bool)
        logprobs = np.zeros((batch, total), np.float32)
        attempt_masks = np.zeros((num_attempts, batch, total), bool)
        lengths = np.zeros((num_attempts, batch), np.int32)
        truncated = np.zeros((num_attempts, batch), bool)
        texts: list[list[str]] = []

        def write(start: int, chunk_tokens: np.ndarray, chunk_pos: np.ndarray, chunk_valid: np.ndarray) -> int:
            end = start + chunk_tokens.shape[1]
            tokens[:, start:end], positions[:, start:end], valid[:, start:end] = chunk_tokens, chunk_pos, chunk_valid
            return end

        index = write(0, chunk_tokens, chunk_pos, chunk_valid)
        counts = chunk_valid.sum(axis=1).astype(np.int32)

        for k, key in enumerate(jax.random.split(rng, num_attempts)):
            gen, cache = sampler.decode(params, cache, logits, counts, settings, key)
            span = slice(index, index + gen.steps)
            index = write(
                index,
                gen.tokens[:, : gen.steps],
                counts[:, None] + np.arange(gen.steps)[None, :],
                gen.mask[:, : gen.steps],
            )
            attempt_masks[k, :, span] = gen.mask[:, : gen.steps]
            logprobs[:, span] = np.where(gen.mask, gen.logprobs, 0.0)[:, : gen.steps]
            lengths[k], truncated[k] = gen.lengths, gen.truncated
            counts = counts + gen.lengths
            texts.append(
                [tok.decode(strip_stop(gen.tokens[b, : gen.lengths[b]], settings.stop_token_ids)) for b in range(batch)]
            )
            if k == num_attempts - 1:
                break

            chunk_tokens, chunk_valid = pad_left(
                [after[k][bool(t == self._end_of_turn)] for t in gen.last_tokens], chunk_len, settings.pad_id
            )
            chunk_pos = chunk_positions(chunk_valid, counts)
            index = write(index, chunk_tokens, chunk_pos, chunk_valid)
            counts = counts + chunk_valid.sum(axis=1).astype(np.int32)
            if reprefill:
                # Encode slots [0, W) of the conversation so far into a fresh cache, W fixed per
                # attempt (the slots past `index` are invalid), then resume writing at `index`.
                width = prompt_len + (k + 1) * (steps + chunk_len)
                del cache
                cache = sampler.new_cache(batch, total)
                logits, cache = sampler.prefill(
                    params,
                    cache,
                    tokens[:, :width],
                    positions[:, :width],
                    valid[:, :width],
                    last_col=index - 1,
                    sub_chunk=settings.prefill_chunk,
                )
                cache = cache.replace(index=jnp.asarray(index, jnp.int32))
            else:
                logits, cache = sampler.prefill(
                    params, cache, chunk_tokens, chunk_pos, chunk_valid, sub_chunk=settings.prefill_chunk
                )

        return Episode(
            tokens=tokens,
            positions=positions,
            valid=valid,
            attempt_masks=attempt_masks,
            logprobs=logprobs,
            lengths=lengths,
            truncated=truncated,
            texts=texts,
            prompt_index=prompt_index,
            num_samples=num_samples,
        )


def gap_instructions(instruction: str | Sequence[str], num_attempts: int) -> tuple[str, ...]:
    """The user turn of each of the K - 1 gaps between attempts: `instruction` repeated when it is
    one text, else the K - 1 texts it gives (ValueError naming the counts when they differ)."""
    if isinstance(instruction, str):
        return (instruction,) * max(num_attempts - 1, 0)
    texts = tuple(instruction)
    if len(texts) != num_attempts - 1 or not all(isinstance(t, str) for t in texts):
        raise ValueError(
            f"{len(texts)} instruction texts {texts!r} for {num_attempts} attempts: give one text for every gap, "
            f"or {num_attempts - 1} texts (one per gap)"
        )
    return texts


def strip_stop(ids: np.ndarray, stop_ids: tuple[int, ...]) -> list[int]:
    """The token ids of an attempt without its final stop token (texts hold no stop token)."""
    ids = [int(i) for i in ids]
    if ids and ids[-1] in stop_ids:
        ids = ids[:-1]
    return ids
