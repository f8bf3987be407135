"""Slot-pool episode sampling: continuous batching of K-attempt episodes, with no barriers.

A fixed pool of R slots (KV cache rows) works through a step's E episodes inside one compiled
`lax.while_loop`. Each slot runs one episode's K attempts back to back at its own write slot in
the cache (`KVCache.index` per row): when attempt k stops, the slot feeds that gap's continuation
chunk (turn end, instruction, model opener) and decodes attempt k + 1 straight after, whatever
the other slots are doing; when its episode ends, the slot takes the step's next prompt. A loop
step makes one decode call on [R, 1] tokens (every decoding slot's next token) and, when some
slot is taking in a prompt or a continuation, one feed call on [m, T] tokens: the next T tokens
of the first m feeding slots, whose cache rows are gathered for it and scattered back, m the
fewest of 1, 2, 4, ..., M rows that hold every feeding slot (or M). A long prompt thus goes in T
tokens per step while the other slots keep decoding, and feeding costs about as many tokens of
compute as are fed, not R T. The decode call attends only to the cache's first w slots, w the
smallest multiple of `SamplingConfig.attention_block` past every decoding slot's write slot.
Each variant of each call is compiled once, inside the loop, so refills compile nothing. The
calls run in while loops of at most one trip, not `lax.cond` branches, which would copy the
whole cache on every in-place update.

A static batch decodes each attempt until its slowest row stops and starts attempt k + 1 only
then; with long-tailed lengths most of its decoded slots are padding. Here a slot idles only when
the queue is empty.

Each row of the returned `Episode` is its slot's cache as the episode left it, compact:
``[prompt][attempt 1][chunk][attempt 2] ... [attempt K]`` then invalid slots, with no padding before
or between chunks, so position ids are slot indices and each attempt token's predecessor slot is
valid (the `Episode` contract); the static sampler lays the same tokens out with gaps instead.

Shapes: E episodes, R slots, K attempts, P prompt bucket, C continuation bucket, F = max(P, C),
N max new tokens, W = P + K N + (K - 1) C slots per row, T refill chunk, M most refill rows,
V vocabulary.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from score_jax import distributed
from score_jax.episodes import Episode, EpisodeSampler, cache_slots, gap_instructions
from score_jax.model.config import ModelConfig
from score_jax.model.transformer import KVCache, Transformer, init_cache
from score_jax.sampling import (
    SamplingConfig,
    attention_windows,
    chunk_positions,
    constrain_cache,
    count_trace,
    sample_logits,
    sharding_scope,
)

Array = jax.Array


@flax.struct.dataclass
class EpisodeRecord:
    """What the pool has written for each episode, slot by slot as its cache row holds it."""

    tokens: Array  # [E, W] int32 (pad in unwritten slots)
    valid: Array  # [E, W] bool
    logprobs: Array  # [E, W] float32: sampling log-probability of attempt tokens, 0 elsewhere
    attempt: Array  # [E, W] int32: k + 1 on attempt k's tokens, 0 elsewhere
    lengths: Array  # [E, K] int32: tokens in each attempt, its stop token included
    truncated: Array  # [E, K] bool: the attempt reached N tokens without a stop token
    steps: Array  # [] int32: loop steps
    decode_steps: Array  # [] int32: decode calls ([R, 1] tokens)
    feed_steps: Array  # [] int32: feed calls ([M, T] tokens)


@flax.struct.dataclass
class PoolState:
    """The while-loop carry: the cache, each slot's progress, the queue head and the record."""

    cache: KVCache  # R rows of W slots, index [R]: each row's next slot (= its next position id)
    logits: Array  # [R, V] float32: next-token logits of each slot
    episode: Array  # [R] int32: the episode in the slot, -1 when empty
    attempt: Array  # [R] int32: its attempt under way (0-based)
    decoded: Array  # [R] int32: tokens of that attempt so far
    chunk: Array  # [R] int32: row of the chunk table being fed (prompt e: e; gap g, closed c: E + 2 g + c)
    fed: Array  # [R] int32: its tokens fed so far; the slot decodes once fed == chunk_len
    chunk_len: Array  # [R] int32: its length
    next_episode: Array  # [] int32: the queue's head
    rng: Array
    record: EpisodeRecord


def _refill(s: PoolState, chunk_lens: Array, num_episodes: int) -> PoolState:
    """Empty slots take the next episodes of the queue, in slot order; their rows are cleared."""
    empty = s.episode < 0
    candidate = s.next_episode + jnp.cumsum(empty) - 1
    take = empty & (candidate < num_episodes)
    cache = s.cache.replace(
        index=jnp.where(take, 0, s.cache.index), valid=jnp.where(take[:, None], False, s.cache.valid)
    )
    return s.replace(
        cache=cache,
        episode=jnp.where(take, candidate, s.episode),
        attempt=jnp.where(take, 0, s.attempt),
        decoded=jnp.where(take, 0, s.decoded),
        chunk=jnp.where(take, candidate, s.chunk),
        fed=jnp.where(take, 0, s.fed),
        chunk_len=jnp.where(take, chunk_lens[jnp.minimum(candidate, num_episodes - 1)], s.chunk_len),
        next_episode=s.next_episode + take.sum(dtype=jnp.int32),
    )


def _decode(
    s: PoolState,
    params,
    chunk_lens: Array,
    stop_at: Array | None,
    key: Array | None,
    *,
    config: ModelConfig,
    settings: SamplingConfig,
    shard,
    num_attempts: int,
    end_of_turn: int,
    window: int,
) -> PoolState:
    """One model call on [R, 1] attending to the first `window` slots: each decoding slot samples
    its next token and writes it at its slot (below `window`); a slot whose attempt stops turns to
    the gap's continuation chunk, or empties after its last attempt."""
    num_episodes = s.record.tokens.shape[0]
    decoding = (s.episode >= 0) & (s.fed >= s.chunk_len)
    token, logp = sample_logits(s.logits, key, settings)
    if stop_at is not None:
        forced = stop_at[jnp.maximum(s.episode, 0), s.attempt]
        token = jnp.where(s.decoded + 1 >= forced, settings.stop_token_ids[0], token)
    token = jnp.where(decoding, token, settings.pad_id)
    here = s.cache.index
    logits, cache = Transformer(config).apply(
        {"params": params}, token[:, None], here[:, None], decoding[:, None], s.cache, window=window
    )

    # Slots not decoding scatter to episode E, out of range: their updates are dropped.
    episode = jnp.where(decoding, s.episode, num_episodes)
    decoded = s.decoded + decoding
    stop = jnp.isin(token, jnp.asarray(settings.stop_token_ids or (-1,), jnp.int32))
    rec = s.record
    record = rec.replace(
        tokens=rec.tokens.at[episode, here].set(token, mode="drop"),
        valid=rec.valid.at[episode, here].set(True, mode="drop"),
        logprobs=rec.logprobs.at[episode, here].set(logp, mode="drop"),
        attempt=rec.attempt.at[episode, here].set(s.attempt + 1, mode="drop"),
        lengths=rec.lengths.at[episode, s.attempt].set(decoded, mode="drop"),
        truncated=rec.truncated.at[episode, s.attempt].set(~stop, mode="drop"),
        decode_steps=rec.decode_steps + 1,
    )
    ended = decoding & (stop | (decoded >= settings.max_new_tokens))
    more = ended & (s.attempt < num_attempts - 1)
    chunk = jnp.where(more, num_episodes + 2 * s.attempt + (token == end_of_turn), s.chunk)
    return s.replace(
        cache=constrain_cache(cache.replace(index=here + decoding), shard),
        logits=jnp.where(decoding[:, None], logits[:, 0], s.logits),
        episode=jnp.where(ended & ~more, -1, s.episode),
        attempt=s.attempt + more,
        decoded=jnp.where(ended, 0, decoded),
        chunk=chunk,
        fed=jnp.where(more, 0, s.fed),
        chunk_len=jnp.where(more, chunk_lens[chunk], s.chunk_len),
        record=record,
    )


def _feed(
    s: PoolState,
    params,
    chunks: Array,
    *,
    width: int,
    rows: int,
    config: ModelConfig,
    settings: SamplingConfig,
    shard,
) -> PoolState:
    """One model call on [M, T] (M = `rows`, T = `width`): the first M feeding slots (slot order)
    each take in their chunk's next T tokens. Their cache rows are gathered, written and scattered
    back, so feeding costs M T tokens of compute, not R T."""
    num_episodes, row_len = s.record.tokens.shape
    feeding = (s.episode >= 0) & (s.fed < s.chunk_len)
    pick = jnp.argsort(~feeding, stable=True)[:rows]
    use = feeding[pick]
    count = jnp.where(use, jnp.minimum(width, s.chunk_len[pick] - s.fed[pick]), 0)
    cols = jnp.arange(width)
    valid = cols[None, :] < count[:, None]
    ahead = jnp.minimum(s.fed[pick][:, None] + cols, chunks.shape[1] - 1)
    inputs = jnp.where(valid, jnp.take_along_axis(chunks[s.chunk[pick]], ahead, axis=1), settings.pad_id)
    here = s.cache.index[pick]
    slots = here[:, None] + cols
    c = s.cache
    # A picked slot that is not feeding (fewer than M feed) writes only invalid slots past its index.
    sub = KVCache(k=c.k[:, pick], v=c.v[:, pick], positions=c.positions[pick], valid=c.valid[pick], index=here)
    model = Transformer(config)
    hidden, sub = model.apply({"params": params}, inputs, slots, valid, sub, return_hidden=True)
    last = jnp.take_along_axis(hidden, jnp.maximum(count - 1, 0)[:, None, None], axis=1)
    logits = model.apply({"params": params}, last, method=Transformer.logits)[:, 0]
    cache = KVCache(
        k=c.k.at[:, pick].set(sub.k),
        v=c.v.at[:, pick].set(sub.v),
        positions=c.positions.at[pick].set(sub.positions),
        valid=c.valid.at[pick].set(sub.valid),
        index=c.index.at[pick].add(count),
    )
    episode = jnp.where(use, s.episode[pick], num_episodes)[:, None]
    at = jnp.where(valid, slots, row_len)
    rec = s.record
    record = rec.replace(
        tokens=rec.tokens.at[episode, at].set(inputs, mode="drop"),
        valid=rec.valid.at[episode, at].set(True, mode="drop"),
        feed_steps=rec.feed_steps + 1,
    )
    return s.replace(
        cache=constrain_cache(cache, shard),
        logits=s.logits.at[pick].set(jnp.where(use[:, None], logits, s.logits[pick])),
        fed=s.fed.at[pick].add(count),
        record=record,
    )


def _when(pred: Array, fn, state: PoolState) -> PoolState:
    """``fn(state) if pred else state``, as a while loop of at most one trip: a `lax.cond` branch
    that updates the cache in place makes XLA copy the whole cache (four copies per decode call on
    CPU, more than the weights' bytes at 125M); a loop body updates it in place."""
    return jax.lax.while_loop(lambda c: c[0], lambda c: (jnp.zeros((), bool), fn(c[1])), (pred, state))[1]


@functools.partial(
    jax.jit,
    static_argnames=(
        "config",
        "settings",
        "shard",
        "slots",
        "num_attempts",
        "refill_chunk",
        "refill_rows",
        "end_of_turn",
    ),
)
def sample_pool(
    params,
    prompts: Array,
    prompt_lens: Array,
    continuations: Array,
    continuation_lens: Array,
    rng: Array,
    stop_at: Array | None = None,
    *,
    config: ModelConfig,
    settings: SamplingConfig,
    shard,
    slots: int,
    num_attempts: int,
    refill_chunk: int,
    refill_rows: int,
    end_of_turn: int,
) -> EpisodeRecord:
    """Samples E K-attempt episodes on a pool of `slots` cache rows (module docstring).

    Each loop step refills empty slots from the queue, then makes a decode call if some slot
    decodes and a feed call (`refill_chunk` tokens on each of the fewest of 1, 2, 4, ...,
    `refill_rows` rows that hold every feeding slot, or `refill_rows` rows) if some slot feeds.

    Args:
      prompts: [E, P] int32, each prompt's tokens from column 0 (right-padded); prompt_lens [E].
      continuations: [2 (K - 1), C] int32, gap g's chunk after an attempt that did (row 2 g + 1) or
        did not (row 2 g) end with `end_of_turn`, right-padded; continuation_lens [2 (K - 1)].
      stop_at: [E, K] (benchmarks of length skew) attempt k of episode e emits the first stop token
        as its stop_at[e, k]-th token, whatever it drew.
    """
    count_trace("slot_pool")
    num_episodes, prompt_len = prompts.shape
    row_len = cache_slots(prompt_len, num_attempts, settings.max_new_tokens, continuations.shape[1])
    width = max(prompt_len, continuations.shape[1])
    chunks = jnp.concatenate([jnp.pad(x, ((0, 0), (0, width - x.shape[1]))) for x in (prompts, continuations)]).astype(
        jnp.int32
    )
    chunk_lens = jnp.concatenate([prompt_lens, continuation_lens]).astype(jnp.int32)
    with sharding_scope(shard):
        cache = init_cache(config, slots, row_len)
        cache = constrain_cache(cache.replace(index=jnp.zeros((slots,), jnp.int32)), shard)
        rows = (num_episodes, row_len)
        zeros = jnp.zeros((slots,), jnp.int32)
        state = PoolState(
            cache=cache,
            logits=jnp.zeros((slots, config.vocab_size), jnp.float32),
            episode=jnp.full((slots,), -1, jnp.int32),
            attempt=zeros,
            decoded=zeros,
            chunk=zeros,
            fed=zeros,
            chunk_len=zeros,
            next_episode=jnp.zeros((), jnp.int32),
            rng=rng,
            record=EpisodeRecord(
                tokens=jnp.full(rows, settings.pad_id, jnp.int32),
                valid=jnp.zeros(rows, bool),
                logprobs=jnp.zeros(rows, jnp.float32),
                attempt=jnp.zeros(rows, jnp.int32),
                lengths=jnp.zeros((num_episodes, num_attempts), jnp.int32),
                truncated=jnp.zeros((num_episodes, num_attempts), bool),
                steps=jnp.zeros((), jnp.int32),
                decode_steps=jnp.zeros((), jnp.int32),
                feed_steps=jnp.zeros((), jnp.int32),
            ),
        )
        common = dict(config=config, settings=settings, shard=shard)
        feed = functools.partial(_feed, params=params, chunks=chunks, width=refill_chunk, **common)
        most = min(refill_rows, slots)
        feed_rows = sorted({2**i for i in range(most.bit_length())} | {most})  # 1, 2, 4, ..., M

        windows = attention_windows(row_len, settings.attention_block)

        def body(s: PoolState) -> PoolState:
            s = _refill(s, chunk_lens, num_episodes)
            rng, key = (s.rng, None) if settings.greedy else jax.random.split(s.rng)
            s = s.replace(rng=rng, record=s.record.replace(steps=s.record.steps + 1))
            decode = functools.partial(
                _decode,
                params=params,
                chunk_lens=chunk_lens,
                stop_at=stop_at,
                key=key,
                num_attempts=num_attempts,
                end_of_turn=end_of_turn,
                **common,
            )
            live = s.episode >= 0
            # The decode call attends to the first w slots, w the smallest window past every
            # decoding slot's write slot (one compiled call per window).
            need = jnp.max(jnp.where(live & (s.fed >= s.chunk_len), s.cache.index + 1, 0))
            for low, window in zip([0, *windows[:-1]], windows):
                s = _when((need > low) & (need <= window), functools.partial(decode, window=window), s)
            # The feed call takes the fewest rows (of `feed_rows`) that holds every feeding slot, up to M.
            count = jnp.sum((s.episode >= 0) & (s.fed < s.chunk_len))
            for low, rows in zip([0, *feed_rows[:-1]], feed_rows):
                s = _when(
                    (count > low) & ((count <= rows) | (rows == feed_rows[-1])), functools.partial(feed, rows=rows), s
                )
            return s

        def cond(s: PoolState):
            return (s.next_episode < num_episodes) | jnp.any(s.episode >= 0)

        return jax.lax.while_loop(cond, body, state).record


class SlotEpisodeSampler(EpisodeSampler):
    """`EpisodeSampler` whose `sample` runs the slot pool: same arguments, same `Episode` fields.

    Args (besides `EpisodeSampler`'s):
      refill_chunk: T, the tokens a slot feeds per loop step while it takes in a prompt or a
        continuation (the other slots keep decoding meanwhile).
      refill_rows: M, the most slots fed at once (at most R); fewer feeding slots go into a
        call of 1, 2, 4, ... rows (one compiled feed call per row count).

    In `sample`, `batches` sizes the pool: R = rows / batches slots, the rows the static sampler's
    cache holds with the same `batches`. `reprefill` is not supported. After each call,
    `last_stats` holds the loop's counts: steps, decode_steps, feed_steps, slots, decoded_slots
    (decode calls x R) and useful_slots (attempt tokens).
    """

    def __init__(self, *args, refill_chunk: int = 64, refill_rows: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        if refill_chunk < 1 or refill_rows < 1:
            raise ValueError(f"refill_chunk={refill_chunk}, refill_rows={refill_rows}: both must be >= 1")
        self.refill_chunk, self.refill_rows = refill_chunk, refill_rows
        self.last_stats: dict[str, int] = {}

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
        stop_at: np.ndarray | None = None,
    ) -> Episode:
        """Samples `num_samples` K-attempt episodes per first-turn text (see `EpisodeSampler.sample`).

        `stop_at` [K, rows] (benchmarks): attempt k of row b stops at its stop_at[k, b]-th token.
        """
        rows = len(first_turns) * num_samples
        if reprefill or num_attempts < 1 or num_samples < 1 or not first_turns or batches < 1 or rows % batches:
            raise ValueError(
                f"slot-pool sampling of {len(first_turns)} problems x {num_samples} samples, "
                f"num_attempts={num_attempts}, batches={batches}, reprefill={reprefill}: give at least one "
                "problem, sample and attempt, batches dividing the rows, and no reprefill"
            )
        settings = self.settings if settings is None else self._with_stops(settings)
        tok, sampler = self.tokenizer, self.sampler
        prompts = [self.template.prompt(tok, text) for text in first_turns]
        prompt_index = np.repeat(np.arange(len(prompts), dtype=np.int32), num_samples)
        prompt_len = settings.bucket(distributed.max_over_processes(max(len(p) for p in prompts)))
        table, table_lens = _right_padded([prompts[i] for i in prompt_index], prompt_len, settings.pad_id)
        gaps = [
            self.template.continuation(tok, text, closed)
            for text in gap_instructions(instruction, num_attempts)
            for closed in (False, True)
        ]
        gap_table, gap_lens = _right_padded(
            gaps, self.instruction_chunk_len(instruction, num_attempts, settings), settings.pad_id
        )
        slots = rows // batches
        if sampler.shard is not None:
            slots *= distributed.batch_slot(sampler.shard.mesh, sampler.shard.rules)[1]
        record = sample_pool(
            sampler.place(params),
            sampler.device_rows(table),
            sampler.device_rows(table_lens),
            jnp.asarray(gap_table),
            jnp.asarray(gap_lens),
            rng,
            None if stop_at is None else sampler.device_rows(np.asarray(stop_at, np.int32).T),
            config=sampler.config,
            settings=settings,
            shard=sampler.shard,
            slots=slots,
            num_attempts=num_attempts,
            refill_chunk=self.refill_chunk,
            refill_rows=self.refill_rows,
            end_of_turn=self._end_of_turn,
        )
        tokens, valid, logprobs, attempt = (
            sampler.host_rows(x) for x in (record.tokens, record.valid, record.logprobs, record.attempt)
        )
        lengths, truncated = (sampler.host_rows(x).T for x in (record.lengths, record.truncated))
        attempt_masks = attempt[None] == np.arange(1, num_attempts + 1)[:, None, None]
        texts = [
            [tok.decode(tokens[b, attempt_masks[k, b]][: lengths[k, b] - (not truncated[k, b])]) for b in range(rows)]
            for k in range(num_attempts)
        ]
        self.last_stats = {
            "steps": int(record.steps),
            "decode_steps": int(record.decode_steps),
            "feed_steps": int(record.feed_steps),
            "slots": slots,
            "decoded_slots": int(record.decode_steps) * slots,
            "useful_slots": int(lengths.sum()),
        }
        return Episode(
            tokens=tokens,
            positions=chunk_positions(valid, np.zeros(rows, np.int32)),
            valid=valid,
            attempt_masks=attempt_masks,
            logprobs=logprobs,
            lengths=lengths,
            truncated=truncated,
            texts=texts,
            prompt_index=prompt_index,
            num_samples=num_samples,
        )


def _right_padded(chunks: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [B, length] int32 with each chunk from column 0, lengths [B] int32)."""
    tokens = np.full((len(chunks), max(length, 1)), pad_id, np.int32)
    for i, chunk in enumerate(chunks):
        tokens[i, : len(chunk)] = chunk
    return tokens, np.asarray([len(c) for c in chunks], np.int32).reshape(len(chunks))
