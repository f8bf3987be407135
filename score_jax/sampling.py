"""Token generation: a jitted prefill and a jitted decode loop on one donated key/value cache.

The cache (see `score_jax.model.transformer`) is written slot by slot and attended by position, so
one cache serves a whole multi-turn conversation: the prompt is prefilled, an attempt is decoded,
the next chunk (a correction instruction) is prefilled at the next free slot, and so on, without
re-encoding anything (`score_jax.episodes` builds SCoRe's two-attempt episodes this way).

Layout of a cache after `Sampler.generate`::

    slots [0, P)        the prompt, left-padded with invalid slots to its length bucket P
    slots [P, P + n)    the n decoding steps; a row's slots after its stop token are invalid

Shapes: B rows, P prompt bucket, N = max_new_tokens, S cache slots, V vocabulary.

Settings (`SamplingConfig`) are a frozen dataclass passed to `jax.jit` as a static argument; all
changing per-row state lives in one `DecodeState` pytree carried by a `lax.while_loop`, which stops
when every row has emitted a stop token or after N steps. Prompts are padded to fixed length
buckets so a new prompt length compiles nothing new; `trace_counts()` counts compilations (each
jitted function bumps its counter when traced) so tests can assert that.

A decode step attends to the cache's first W slots only, W the next slot rounded up to
`SamplingConfig.attention_block` (one compiled loop segment per window), not to all S slots. This
relies on the cache invariant that slots at or past `cache.index` hold no valid token, which
prefill and decode keep.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from score_jax import distributed, sharding
from score_jax.model.config import ModelConfig
from score_jax.model.transformer import KVCache, Transformer, cache_logical_axes, init_cache, param_shardings

Array = jax.Array

_TRACES: collections.Counter = collections.Counter()


def trace_counts() -> dict[str, int]:
    """How many times each jitted sampling function has been traced (one trace = one compile)."""
    return dict(_TRACES)


def count_trace(name: str) -> None:
    """Counts one trace of the jitted function `name` (called from inside its body, so once per compile)."""
    _TRACES[name] += 1


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How to sample (hashable: a static jit argument; a new value compiles a new loop)."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int | None = None  # keep only the k most likely tokens
    top_p: float | None = None  # keep the smallest set of most likely tokens with mass >= top_p
    greedy: bool = False  # argmax; temperature, top_k and top_p are then ignored
    stop_token_ids: tuple[int, ...] = ()  # a row ends after emitting one of these (kept in its output)
    # Prompt (and appended-chunk) lengths are padded up to the first bucket that fits.
    length_buckets: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
    # Decode attends to the filled prefix of the cache rounded up to this many slots, not to the
    # whole cache (each block boundary is one more compiled loop segment); None: whole cache.
    attention_block: int | None = 256
    # Prefill runs a long chunk this many tokens at a time (a scan over sub-chunks), so attention's
    # [B, N, T, S] scores exist for T = prefill_chunk tokens at once; None: the whole chunk at once.
    prefill_chunk: int | None = 512
    pad_id: int = 0  # token id written for rows that are done

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}: must be at least 1")
        if not self.greedy and not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature}: must be > 0 (use greedy=True for argmax)")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k}: must be >= 1 or None")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}: must be in (0, 1] or None")
        if not self.length_buckets or list(self.length_buckets) != sorted(set(self.length_buckets)):
            raise ValueError(f"length_buckets={self.length_buckets}: give a non-empty increasing tuple")
        if self.attention_block is not None and self.attention_block < 1:
            raise ValueError(f"attention_block={self.attention_block}: must be >= 1 or None")
        if self.prefill_chunk is not None and self.prefill_chunk < 1:
            raise ValueError(f"prefill_chunk={self.prefill_chunk}: must be >= 1 or None")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        object.__setattr__(self, "length_buckets", tuple(int(b) for b in self.length_buckets))

    def replace(self, **changes) -> SamplingConfig:
        return dataclasses.replace(self, **changes)

    def bucket(self, length: int) -> int:
        """The padded length for a chunk of `length` tokens."""
        for b in self.length_buckets:
            if length <= b:
                return b
        raise ValueError(
            f"a chunk of {length} tokens exceeds the largest length bucket "
            f"{self.length_buckets[-1]}; add a larger bucket to SamplingConfig.length_buckets"
        )


@flax.struct.dataclass
class DecodeState:
    """Everything the decode loop changes, one pytree (the while-loop carry)."""

    cache: KVCache
    logits: Array  # [B, V] float32: next-token logits
    step: Array  # [] int32: tokens sampled so far
    tokens: Array  # [B, N] int32: sampled tokens (pad after a row is done)
    logprobs: Array  # [B, N] float32: their log-probabilities under the sampling distribution
    positions: Array  # [B] int32: position id of each row's next token
    lengths: Array  # [B] int32: tokens each row has emitted, its stop token included
    done: Array  # [B] bool: the row has emitted a stop token (or was never live)
    rng: Array  # PRNG key


@dataclasses.dataclass
class Generation:
    """One decoding run, on the host.

    tokens, logprobs and mask are [B, N]; column j was written at cache slot ``start + j``.
    For greedy decoding, logprobs are under the model's untempered distribution.
    """

    tokens: np.ndarray  # [B, N] int32
    logprobs: np.ndarray  # [B, N] float32 (0 where mask is False)
    mask: np.ndarray  # [B, N] bool: the token is part of the row's output (through its stop token)
    lengths: np.ndarray  # [B] int32
    truncated: np.ndarray  # [B] bool: the row reached max_new_tokens without a stop token
    start: int  # cache slot of column 0
    steps: int  # cache slots used (max length over rows)

    @property
    def last_tokens(self) -> np.ndarray:
        """[B] each row's last output token (its stop token unless truncated)."""
        return np.take_along_axis(self.tokens, np.maximum(self.lengths - 1, 0)[:, None], axis=1)[:, 0]


# ---------------------------------------------------------------------------------------------
# Token selection.


def sample_logits(logits: Array, rng: Array | None, settings: SamplingConfig) -> tuple[Array, Array]:
    """Draws one token per row from logits [B, V]; returns (tokens [B] int32, logprobs [B] f32).

    Log-probabilities are under the distribution actually sampled from: after temperature, top-k
    and top-p (greedy: the untempered model distribution).
    """
    logits = logits.astype(jnp.float32)
    if settings.greedy:
        tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return tokens, jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]
    logits = logits / settings.temperature
    vocab = logits.shape[-1]
    ids = None
    if settings.top_k is not None and settings.top_k < vocab:
        logits, ids = jax.lax.top_k(logits, settings.top_k)  # sorted, descending
    elif settings.top_p is not None and settings.top_p < 1:
        logits, ids = jax.lax.top_k(logits, vocab)  # a full sort
    if settings.top_p is not None and settings.top_p < 1:
        probs = jax.nn.softmax(logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        logits = jnp.where(mass_before < settings.top_p, logits, -jnp.inf)
    logp = jax.nn.log_softmax(logits, axis=-1)
    choice = jax.random.categorical(rng, logp, axis=-1)[:, None]
    chosen_logp = jnp.take_along_axis(logp, choice, axis=-1)[:, 0]
    tokens = choice if ids is None else jnp.take_along_axis(ids, choice, axis=-1)
    return tokens[:, 0].astype(jnp.int32), chosen_logp


# ---------------------------------------------------------------------------------------------
# Jitted steps. `shard` (a ShardingContext or None) is static, so sharded and unsharded calls
# never share a trace, and activation constraints are active while tracing.


def sharding_scope(shard: sharding.ShardingContext | None):
    """Activation sharding constraints for code traced inside the block (none without a mesh)."""
    return sharding.use_sharding(shard.mesh, shard.rules) if shard is not None else contextlib.nullcontext()


def constrain_cache(cache: KVCache, shard: sharding.ShardingContext | None) -> KVCache:
    """`cache` laid out as `cache_logical_axes()` maps under the shard's rules (unchanged without one)."""
    if shard is None:
        return cache
    return jax.tree.map(
        lambda x, names: jax.lax.with_sharding_constraint(x, shard.sharding(names, x.shape)),
        cache,
        cache_logical_axes(),
        is_leaf=lambda x: isinstance(x, tuple),
    )


@functools.partial(jax.jit, static_argnames=("config", "batch", "length", "shard"))
def empty_cache(*, config: ModelConfig, batch: int, length: int, shard) -> KVCache:
    """A cache of `length` slots for `batch` rows (global), created with its sharding."""
    _TRACES["new_cache"] += 1
    return constrain_cache(init_cache(config, batch, length), shard)


@functools.partial(jax.jit, static_argnames=("config", "shard", "sub_chunk"), donate_argnames=("cache",))
def prefill_step(
    params,
    cache: KVCache,
    tokens: Array,
    positions: Array,
    valid: Array,
    last_col: Array,
    *,
    config: ModelConfig,
    shard,
    sub_chunk: int | None = None,
) -> tuple[Array, KVCache]:
    """Writes a chunk [B, T] at slot cache.index; returns the logits [B, V] at column `last_col`.

    With `sub_chunk` C dividing T (and smaller), the chunk goes through the model C tokens at a
    time in a scan, each piece written into the cache before the next attends to it: the same
    result, with attention temporaries for C query tokens instead of T.
    """
    _TRACES["prefill"] += 1
    with sharding_scope(shard):
        model = Transformer(config)
        b, t = tokens.shape
        if sub_chunk is None or t <= sub_chunk or t % sub_chunk:
            hidden, cache = model.apply({"params": params}, tokens, positions, valid, cache, return_hidden=True)
            last = jax.lax.dynamic_index_in_dim(hidden, last_col, axis=1, keepdims=True)
        else:
            pieces = t // sub_chunk

            def split(x: Array) -> Array:  # [B, T] -> [T / C, B, C]
                return x.reshape(b, pieces, sub_chunk).swapaxes(0, 1)

            def body(carry, xs):
                cache, last = carry
                i, tok, pos, val = xs
                hidden, cache = model.apply({"params": params}, tok, pos, val, cache, return_hidden=True)
                here = jax.lax.dynamic_index_in_dim(hidden, last_col % sub_chunk, axis=1, keepdims=True)
                last = jnp.where(i == last_col // sub_chunk, here.astype(last.dtype), last)
                return (constrain_cache(cache, shard), last), None

            last = jnp.zeros((b, 1, config.d_model), jnp.dtype(config.dtype))
            xs = (jnp.arange(pieces), split(tokens), split(positions), split(valid))
            (cache, last), _ = jax.lax.scan(body, (cache, last), xs)
        logits = model.apply({"params": params}, last, method=Transformer.logits)[:, 0]
        return logits, constrain_cache(cache, shard)


def _decode_segment(
    state: DecodeState,
    params,
    stop_at: Array | None,
    *,
    window: int,
    config: ModelConfig,
    settings: SamplingConfig,
    shard,
) -> DecodeState:
    """Runs decode steps attending to the first `window` slots while some row is live, steps remain
    and the next slot is below the window."""
    model = Transformer(config)
    stop_ids = jnp.asarray(settings.stop_token_ids or (-1,), jnp.int32)

    def cond(s: DecodeState):
        return (s.step < settings.max_new_tokens) & (s.cache.index < window) & ~jnp.all(s.done)

    def body(s: DecodeState) -> DecodeState:
        rng, key = (s.rng, None) if settings.greedy else jax.random.split(s.rng)
        token, logp = sample_logits(s.logits, key, settings)
        if stop_at is not None:
            token = jnp.where(s.lengths + 1 >= stop_at, settings.stop_token_ids[0], token)
        live = ~s.done
        token = jnp.where(live, token, settings.pad_id)
        logp = jnp.where(live, logp, 0.0)
        # Every sampled token goes into the cache (invalid for finished rows), so the next chunk of
        # a conversation can follow straight on.
        logits, cache = model.apply(
            {"params": params}, token[:, None], s.positions[:, None], live[:, None], s.cache, window=window
        )
        return DecodeState(
            cache=constrain_cache(cache, shard),
            logits=logits[:, 0],
            step=s.step + 1,
            tokens=jax.lax.dynamic_update_slice(s.tokens, token[:, None], (0, s.step)),
            logprobs=jax.lax.dynamic_update_slice(s.logprobs, logp[:, None], (0, s.step)),
            positions=s.positions + live,
            lengths=s.lengths + live,
            done=s.done | (live & jnp.isin(token, stop_ids)),
            rng=rng,
        )

    return jax.lax.while_loop(cond, body, state)


def attention_windows(cache_len: int, block: int | None) -> list[int]:
    """Attention windows a decoder compiles for a cache of `cache_len` slots: multiples of `block`,
    then the whole cache."""
    if block is None or block >= cache_len:
        return [cache_len]
    return list(range(block, cache_len, block)) + [cache_len]


@functools.partial(jax.jit, static_argnames=("config", "settings", "shard"), donate_argnames=("cache",))
def decode_loop(
    params,
    cache: KVCache,
    logits: Array,
    positions: Array,
    done: Array,
    rng: Array,
    stop_at: Array | None = None,
    *,
    config: ModelConfig,
    settings: SamplingConfig,
    shard,
) -> DecodeState:
    """Samples up to N tokens per row, writing them at slots [cache.index, cache.index + N).

    The loop runs in segments: while the next slot is below `attention_block`, the model sees only
    the first `attention_block` slots of the cache, then the first 2 * `attention_block`, and so
    on, so a step costs attention over the filled prefix rather than over the whole cache.
    Segments whose window lies below the start slot run no steps. `stop_at` [B] (benchmarks of
    length skew): row b emits the first stop token as its stop_at[b]-th token, whatever it drew.
    """
    _TRACES["decode"] += 1
    batch, steps = logits.shape[0], settings.max_new_tokens
    with sharding_scope(shard):
        state = DecodeState(
            cache=cache,
            logits=logits.astype(jnp.float32),
            step=jnp.zeros((), jnp.int32),
            tokens=jnp.full((batch, steps), settings.pad_id, jnp.int32),
            logprobs=jnp.zeros((batch, steps), jnp.float32),
            positions=positions.astype(jnp.int32),
            lengths=jnp.zeros((batch,), jnp.int32),
            done=done.astype(bool),
            rng=rng,
        )
        for window in attention_windows(cache.max_len, settings.attention_block):
            state = _decode_segment(
                state, params, stop_at, window=window, config=config, settings=settings, shard=shard
            )
        return state


# ---------------------------------------------------------------------------------------------
# Host-side driver.


def pad_left(chunks: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pads token lists into (tokens [B, length] int32, valid [B, length] bool)."""
    tokens = np.full((len(chunks), length), pad_id, np.int32)
    valid = np.zeros((len(chunks), length), bool)
    for i, chunk in enumerate(chunks):
        if len(chunk) > length:
            raise ValueError(f"row {i} has {len(chunk)} tokens, more than the padded length {length}")
        if len(chunk):
            tokens[i, length - len(chunk) :] = chunk
            valid[i, length - len(chunk) :] = True
    return tokens, valid


def chunk_positions(valid: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Positions [B, T] of a left-padded chunk whose rows continue from `offsets` [B] tokens."""
    return (offsets[:, None] + np.maximum(np.cumsum(valid, axis=1) - 1, 0)).astype(np.int32)


class Sampler:
    """Runs a model's prefill and decode, optionally sharded on a training mesh.

    Parameters are an argument of every call (a policy changes them every step). With a mesh they
    should be laid out as `init_params(config, rng, mesh, rules)` makes them; `place` moves them
    there if they are not (a no-op when they are).

    Args:
      config: the model.
      mesh, rules: the (data, fsdp, tensor) mesh and rule set to run on; rows are split over the
        batch axes, the cache as `cache_logical_axes()` maps under the rules.

    With several processes every call is collective: each process passes its own block of rows
    (`score_jax.distributed.batch_slot`), the jitted steps run on global arrays, and host results
    hold the process's rows only. Batch sizes here are per process.
    """

    def __init__(
        self, config: ModelConfig, *, mesh: jax.sharding.Mesh | None = None, rules: str | sharding.Rules = "fsdp"
    ):
        self.config = config
        self.shard = None if mesh is None else sharding.ShardingContext(mesh, sharding.resolve_rules(rules))
        self._param_shardings = None if mesh is None else param_shardings(config, mesh, self.shard.rules)

    def place(self, params: Any) -> Any:
        """`params` laid out for this sampler's mesh."""
        if self._param_shardings is None:
            return params
        return jax.device_put(params, self._param_shardings)

    def device_rows(self, x: np.ndarray) -> Array:
        """A host batch [B, ...] (this process's rows) as a global array laid out for the mesh."""
        if self.shard is None:
            return jnp.asarray(x)
        return distributed.global_batch(x, self.shard.mesh, self.shard.rules)

    def host_rows(self, x: Array) -> np.ndarray:
        """This process's rows of a global [B, ...] array, on the host."""
        if self.shard is None:
            return np.asarray(x)
        return distributed.local_rows(x, self.shard.mesh, self.shard.rules)

    def new_cache(self, batch: int, length: int) -> KVCache:
        """An empty cache of `length` slots for `batch` rows per process, created in place with its sharding."""
        if self.shard is not None:
            batch *= distributed.batch_slot(self.shard.mesh, self.shard.rules)[1]
        return empty_cache(config=self.config, batch=batch, length=length, shard=self.shard)

    def prefill(
        self,
        params: Any,
        cache: KVCache,
        tokens: np.ndarray,
        positions: np.ndarray,
        valid: np.ndarray,
        last_col: int | None = None,
        sub_chunk: int | None = None,
    ) -> tuple[Array, KVCache]:
        """Writes a chunk [B, T] at slot `cache.index` (the cache is donated).

        Returns the logits [B, V] at column `last_col` (default: the last column, which holds each
        row's last token when the chunk is left-padded) and the new cache. `sub_chunk`: run the
        model on that many tokens at a time (`SamplingConfig.prefill_chunk`; same result).
        """
        last_col = tokens.shape[1] - 1 if last_col is None else last_col
        return prefill_step(
            params,
            cache,
            self.device_rows(tokens),
            self.device_rows(positions),
            self.device_rows(valid),
            jnp.asarray(last_col, jnp.int32),
            config=self.config,
            shard=self.shard,
            sub_chunk=sub_chunk,
        )

    def decode(
        self,
        params: Any,
        cache: KVCache,
        logits: Array,
        positions: np.ndarray,
        settings: SamplingConfig,
        rng: Array,
        done: np.ndarray | None = None,
        stop_at: np.ndarray | None = None,
    ) -> tuple[Generation, KVCache]:
        """Samples from `logits` [B, V] on, writing at slots [cache.index, cache.index + steps).

        Args:
          cache: donated.
          positions: [B] position id of each row's first new token (its count of tokens so far).
          done: [B] rows to leave untouched (default none).
          stop_at: [B] force each row's stop token as its stop_at-th token (`decode_loop`).
        Returns:
          the host-side `Generation` and the cache, whose index is ``start + steps``.
        """
        start = int(cache.index)
        if start + settings.max_new_tokens > cache.max_len:
            raise ValueError(
                f"decoding {settings.max_new_tokens} tokens from slot {start} needs "
                f"{start + settings.max_new_tokens} cache slots; the cache has {cache.max_len}"
            )
        positions = np.asarray(positions, np.int32)
        done = np.zeros(positions.shape, bool) if done is None else np.asarray(done, bool)
        state = decode_loop(
            params,
            cache,
            logits,
            self.device_rows(positions),
            self.device_rows(done),
            rng,
            None if stop_at is None else self.device_rows(np.asarray(stop_at, np.int32)),
            config=self.config,
            settings=settings,
            shard=self.shard,
        )
        tokens, logprobs, lengths = (self.host_rows(x) for x in (state.tokens, state.logprobs, state.lengths))
        mask = np.arange(settings.max_new_tokens)[None, :] < lengths[:, None]
        gen = Generation(
            tokens=tokens,
            logprobs=logprobs,
            mask=mask,
            lengths=lengths,
            truncated=~done,
            start=start,
            steps=int(state.step),
        )
        gen.truncated &= ~((lengths > 0) & np.isin(gen.last_tokens, settings.stop_token_ids))
        return gen, state.cache

    def prefill_prompts(
        self, params: Any, prompts: Sequence[Sequence[int]], settings: SamplingConfig, extra_slots: int = 0
    ) -> tuple[Array, KVCache, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Prefills prompts (token lists of any lengths) into a new cache.

        The prompts are left-padded to their length bucket P, in a cache of
        ``P + max_new_tokens + extra_slots`` slots (extra slots leave room for later turns).
        Returns the logits [B, V] after each prompt, the cache, and the chunk as written:
        (tokens, positions, valid), each [B, P]. With several processes, P is the bucket of the
        longest prompt over all of them.
        """
        if not len(prompts):
            raise ValueError("no prompts to sample from")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token (a BOS, say)")
        length = settings.bucket(distributed.max_over_processes(max(len(p) for p in prompts)))
        tokens, valid = pad_left(prompts, length, settings.pad_id)
        positions = chunk_positions(valid, np.zeros((len(prompts),), np.int32))
        cache = self.new_cache(len(prompts), length + settings.max_new_tokens + extra_slots)
        logits, cache = self.prefill(params, cache, tokens, positions, valid, sub_chunk=settings.prefill_chunk)
        return logits, cache, (tokens, positions, valid)

    def generate(
        self, params: Any, prompts: Sequence[Sequence[int]], settings: SamplingConfig, rng: Array
    ) -> Generation:
        """Samples a continuation of each prompt (token lists of any lengths)."""
        params = self.place(params)
        logits, cache, (_, _, valid) = self.prefill_prompts(params, prompts, settings)
        return self.decode(params, cache, logits, valid.sum(axis=1), settings, rng)[0]
