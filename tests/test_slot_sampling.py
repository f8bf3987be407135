"""Slot-pool episodes: the same greedy episodes as the static sampler, the same sampling law, refills
of long prompts, scoring by the trainer, and a bounded number of compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from test_sampling import KNOWN, TARGET, known_model_params

from score_jax import sampling, sharding
from score_jax.episodes import EpisodeSampler
from score_jax.model import get_preset, init_params
from score_jax.rl.train_step import token_logprobs
from score_jax.slot_sampling import SlotEpisodeSampler
from score_jax.tokenizer import ByteTokenizer, get_chat_template

TOK = ByteTokenizer()
TEMPLATE = get_chat_template("gemma")
EOT = TOK.token_id("<end_of_turn>")
CONFIG = get_preset("tiny_llama", vocab_size=TOK.vocab_size)
# Lowercase letters stop an attempt too, so rows end at different steps, some closed by
# <end_of_turn> and some not, and some run out of tokens (as in test_episodes).
STOPS = (TOK.eos_id, EOT, *TOK.encode("abcdefghijklmnopqrstuvwxyz"))
GREEDY = sampling.SamplingConfig(
    max_new_tokens=12, greedy=True, stop_token_ids=STOPS, length_buckets=(16, 32, 64), attention_block=None
)
PROBLEMS = ["Q: 12+30?", "Q: 7*6?", "hi", "Q: what is the capital of France?"]
FIX = "Please fix it."


@pytest.fixture(scope="module")
def params():
    p = init_params(CONFIG, jax.random.key(0))
    p["lm_head"] = p["lm_head"].at[:, EOT].multiply(4.0)  # <end_of_turn> more likely
    return p


def assert_same_episodes(slot, static):
    """Row for row: texts, flags, each attempt's tokens and log-probs, the whole token sequence."""
    assert slot.texts == static.texts
    for name in ("lengths", "truncated", "prompt_index"):
        np.testing.assert_array_equal(getattr(slot, name), getattr(static, name), err_msg=name)
    assert slot.num_samples == static.num_samples
    for r in range(len(static.prompt_index)):
        for k in range(static.num_attempts):
            a, b = slot.attempt_masks[k, r], static.attempt_masks[k, r]
            np.testing.assert_array_equal(slot.tokens[r, a], static.tokens[r, b])
            np.testing.assert_array_equal(slot.positions[r, a], static.positions[r, b])
            np.testing.assert_allclose(slot.logprobs[r, a], static.logprobs[r, b], atol=1e-5, rtol=0)
        np.testing.assert_array_equal(slot.tokens[r, slot.valid[r]], static.tokens[r, static.valid[r]])
        np.testing.assert_array_equal(slot.positions[r, slot.valid[r]], np.arange(slot.valid[r].sum()))
        for k in range(static.num_attempts):  # the Episode contract: an attempt token's predecessor is valid
            slots = np.flatnonzero(slot.attempt_masks[k, r])
            assert slot.valid[r, slots - 1].all()
    assert (slot.logprobs[~slot.attempt_masks.any(0)] == 0).all()


@pytest.mark.parametrize("num_attempts", [2, 3])
@pytest.mark.parametrize("mesh", [None, (2, 2, 2)], ids=["unsharded", "mesh8"])
def test_greedy_episodes_equal_the_static_samplers(params, num_attempts, mesh):
    """Pools of 4 slots (batches=2: every slot is refilled) and of 8 (no refills), K = 2 and 3."""
    kwargs = {}
    if mesh is not None:
        kwargs = dict(mesh=sharding.make_mesh(mesh), rules="fsdp_tensor")
    static = EpisodeSampler(CONFIG, TOK, TEMPLATE, GREEDY, **kwargs)
    want = static.sample(params, PROBLEMS, FIX, rng=jax.random.key(1), num_samples=2, num_attempts=num_attempts)
    assert want.truncated.any() and (want.lengths < GREEDY.max_new_tokens).any(), "the fixture lost its variety"
    pool = SlotEpisodeSampler(CONFIG, TOK, TEMPLATE, GREEDY, refill_chunk=8, **kwargs)
    for batches in (2, 1):
        got = pool.sample(
            params, PROBLEMS, FIX, rng=jax.random.key(2), num_samples=2, num_attempts=num_attempts, batches=batches
        )
        assert_same_episodes(got, want)
        assert pool.last_stats["slots"] == 8 // batches
        assert pool.last_stats["useful_slots"] == want.lengths.sum()


def test_windowed_decode_gives_the_same_episodes(params):
    """Decode calls that attend to the first w cache slots (attention_block: one compiled call per
    window) give the episodes of whole-cache attention, with refills; with windows of 16 slots every
    prompt (18-49 tokens) starts past the first window and rows cross window boundaries as they decode."""
    block = 16
    want = SlotEpisodeSampler(CONFIG, TOK, TEMPLATE, GREEDY, refill_chunk=8).sample(
        params, PROBLEMS, FIX, rng=jax.random.key(2), num_samples=2, num_attempts=2, batches=2
    )
    windowed = SlotEpisodeSampler(CONFIG, TOK, TEMPLATE, GREEDY.replace(attention_block=block), refill_chunk=8)
    got = windowed.sample(params, PROBLEMS, FIX, rng=jax.random.key(2), num_samples=2, num_attempts=2, batches=2)
    assert_same_episodes(got, want)


def test_long_prompt_is_fed_in_chunks_beside_decoding_slots(params):
    """A prompt of ~55 tokens through a 4-token refill chunk, into a slot freed while others decode."""
    problems = ["hi", "x" * 30 + " what now?", "Q: 7*6?"]
    static = EpisodeSampler(CONFIG, TOK, TEMPLATE, GREEDY)
    want = static.sample(params, problems, [FIX, "Again."], rng=jax.random.key(1), num_attempts=3)
    pool = SlotEpisodeSampler(CONFIG, TOK, TEMPLATE, GREEDY, refill_chunk=4)
    got = pool.sample(params, problems, [FIX, "Again."], rng=jax.random.key(1), num_attempts=3, batches=3)
    assert len(TEMPLATE.prompt(TOK, problems[1])) > 10 * pool.refill_chunk
    assert_same_episodes(got, want)
    # One slot: each decode call is one of its tokens, each feed call up to 4 of a chunk's.
    fed = got.valid & ~got.attempt_masks.any(0)
    edges = [np.flatnonzero(np.diff(np.r_[0, row, 0])).reshape(-1, 2) for row in fed.astype(int)]
    runs = np.concatenate([e[:, 1] - e[:, 0] for e in edges])
    assert len(runs) == 3 * 3 and pool.last_stats["feed_steps"] == (-(-runs // 4)).sum()
    assert pool.last_stats["decode_steps"] == got.lengths.sum()


def test_trainer_scores_the_sampled_tokens(params):
    """The trainer's log-probs over (tokens, positions, valid) are the sampler's, temperature 1."""
    pool = SlotEpisodeSampler(CONFIG, TOK, TEMPLATE, GREEDY.replace(greedy=False), refill_chunk=8)
    ep = pool.sample(params, PROBLEMS, FIX, rng=jax.random.key(3), num_samples=3, batches=3)
    scored = token_logprobs(CONFIG, params, *(jnp.asarray(x) for x in (ep.tokens, ep.positions, ep.valid)))
    mask = ep.attempt_masks.any(0)
    np.testing.assert_allclose(np.asarray(scored)[mask], ep.logprobs[mask], atol=1e-4)


def test_no_compile_per_refill_or_call(params):
    """One trace per shape: refills inside a call, and new prompts (same bucket) and keys across
    calls, compile nothing new."""
    pool = SlotEpisodeSampler(CONFIG, TOK, TEMPLATE, GREEDY.replace(greedy=False), refill_chunk=8)
    pool.sample(params, PROBLEMS, FIX, rng=jax.random.key(0), num_samples=2, batches=4)
    before = sampling.trace_counts()["slot_pool"]
    for seed, problems in enumerate([PROBLEMS, ["a", "b?", "Q: 1+1?", "Q: what is the capital of Spain?"]]):
        pool.sample(params, problems, FIX, rng=jax.random.key(seed), num_samples=2, batches=4)
        assert pool.last_stats["slots"] == 2 and pool.last_stats["feed_steps"] > 4
    assert sampling.trace_counts()["slot_pool"] == before


# The sampling law, on tests/test_sampling.py's model whose next-token logits are a known vector
# whatever the context, sampled through the pool's refills.


class _Digits(ByteTokenizer):
    """Byte tokenizer over a 32-token vocabulary: text is mapped into it, ids decode as nothing."""

    vocab_size = 32

    def encode(self, text, add_bos=False):
        return [1] * add_bos + [3 + b % 29 for b in text.encode()]

    def decode(self, ids):
        return ""

    def token_id(self, text):
        return 2


def test_temperature_one_follows_the_law():
    settings = sampling.SamplingConfig(max_new_tokens=32, stop_token_ids=(0,), length_buckets=(128,))
    pool = SlotEpisodeSampler(KNOWN, _Digits(), TEMPLATE, settings, refill_chunk=8)
    ep = pool.sample(known_model_params(), ["ab"] * 32, "c", rng=jax.random.key(0), num_samples=2, batches=4)
    mask = ep.attempt_masks.any(0)
    tokens = ep.tokens[mask]
    law = np.exp(TARGET - TARGET.max())
    law /= law.sum()
    assert len(tokens) > 3000 and pool.last_stats["feed_steps"] > 16
    counts = np.bincount(tokens, minlength=32)
    assert stats.chisquare(counts, law * len(tokens)).pvalue > 1e-3
    assert stats.chisquare(counts, len(tokens) * np.exp(TARGET / 1.3) / np.exp(TARGET / 1.3).sum()).pvalue < 1e-3
    np.testing.assert_allclose(ep.logprobs[mask], np.log(law[tokens]), atol=1e-4)
