"""Episodes: slot layout and masks, cache reuse versus full forwards, re-prefill, evaluation decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import inference_scaling, sharding
from score_jax.episodes import EpisodeSampler
from score_jax.model import forward, get_preset, init_params
from score_jax.sampling import SamplingConfig
from score_jax.tokenizer import ByteTokenizer, get_chat_template

TOK = ByteTokenizer()
TEMPLATE = get_chat_template("gemma")
EOT = TOK.token_id("<end_of_turn>")
CONFIG = get_preset("tiny_llama", vocab_size=TOK.vocab_size)
# Besides the template's stops, the lowercase letters end an attempt, so rows finish at different
# steps (gaps), some closed by <end_of_turn> and some not, and some run out of tokens.
STOPS = (TOK.eos_id, EOT) + tuple(TOK.encode("abcdefghijklmnopqrstuvwxyz"))
SETTINGS = SamplingConfig(
    max_new_tokens=12, temperature=1.0, stop_token_ids=STOPS, length_buckets=(16, 32, 64), attention_block=None
)
FIRST_TURNS = ["Q: 12+30?", "Q: 7*6?", "hi", "Q: what is the capital of France?"]
INSTRUCTION = "Please fix it."


@pytest.fixture(scope="module")
def params():
    p = init_params(CONFIG, jax.random.key(0))
    p["lm_head"] = p["lm_head"].at[:, EOT].multiply(4.0)  # <end_of_turn> more likely
    return p


@pytest.fixture(scope="module")
def episode(params):
    sampler = EpisodeSampler(CONFIG, TOK, TEMPLATE, SETTINGS)
    return sampler.sample(params, FIRST_TURNS, INSTRUCTION, rng=jax.random.key(1), num_samples=3)


def test_layout_masks_and_flags(episode):
    k, b, s = episode.attempt_masks.shape
    prompt_len = SETTINGS.bucket(max(len(TEMPLATE.prompt(TOK, t)) for t in FIRST_TURNS))
    chunk_len = SETTINGS.bucket(len(TEMPLATE.continuation(TOK, INSTRUCTION, False)))
    assert (k, b) == (2, 12) and s == prompt_len + 2 * 12 + chunk_len == 64 + 24 + 32
    np.testing.assert_array_equal(episode.prompt_index, np.repeat(np.arange(4), 3))
    last = [[int(episode.tokens[r][episode.attempt_masks[a, r]][-1]) for r in range(b)] for a in range(k)]
    first_closed = [not t and last[0][r] == EOT for r, t in enumerate(episode.truncated[0])]
    first_open = [not t and last[0][r] != EOT for r, t in enumerate(episode.truncated[0])]
    assert any(first_closed) and any(first_open) and episode.truncated[0].any(), "the fixture lost its variety"

    assert not (episode.attempt_masks[0] & episode.attempt_masks[1]).any()
    assert not (episode.attempt_masks & ~episode.valid[None]).any()
    assert (episode.logprobs[~episode.attempt_masks.any(0)] == 0).all() and (episode.logprobs <= 0).all()
    for r in range(b):
        attempts = []
        for a in range(k):
            slots = np.flatnonzero(episode.attempt_masks[a, r])
            ids = episode.tokens[r, slots].tolist()
            assert len(ids) == episode.lengths[a, r] and np.all(np.diff(slots) == 1)
            assert episode.valid[r, slots[0] - 1]  # the slot before an attempt holds its context's last token
            stops_inside = [t in STOPS for t in ids[:-1]]
            assert not any(stops_inside)
            assert episode.truncated[a, r] == (ids[-1] not in STOPS)
            assert episode.truncated[a, r] == (len(ids) == SETTINGS.max_new_tokens and ids[-1] not in STOPS)
            assert episode.texts[a][r] == TOK.decode(ids[:-1] if ids[-1] in STOPS else ids)
            attempts.append(ids)
        closed = attempts[0][-1] == EOT
        want = (
            TEMPLATE.prompt(TOK, FIRST_TURNS[episode.prompt_index[r]])
            + attempts[0]
            + TEMPLATE.continuation(TOK, INSTRUCTION, closed)
            + attempts[1]
        )
        assert episode.tokens[r, episode.valid[r]].tolist() == want
        np.testing.assert_array_equal(episode.positions[r, episode.valid[r]], np.arange(len(want)))


def test_cache_matches_full_forward(params, episode):
    """Logits from the cache, slot by slot across both attempts and the gaps, equal one forward."""
    full = forward(
        CONFIG, params, jnp.asarray(episode.tokens), jnp.asarray(episode.positions), jnp.asarray(episode.valid)
    )
    full = np.asarray(full)
    sampler = EpisodeSampler(CONFIG, TOK, TEMPLATE, SETTINGS).sampler
    cache = sampler.new_cache(*episode.tokens.shape)
    for slot in range(episode.tokens.shape[1]):
        cut = slice(slot, slot + 1)
        logits, cache = sampler.prefill(
            params, cache, episode.tokens[:, cut], episode.positions[:, cut], episode.valid[:, cut]
        )
        rows = episode.valid[:, slot]
        np.testing.assert_allclose(np.asarray(logits)[rows], full[rows, slot], atol=1e-4, err_msg=f"slot {slot}")

    # The decode loop's own log-probabilities (temperature 1, untruncated) score the same tokens.
    logp = np.asarray(jax.nn.log_softmax(full[:, :-1], axis=-1))
    picked = np.take_along_axis(logp, episode.tokens[:, 1:, None], axis=-1)[..., 0]
    mask = episode.attempt_masks.any(0)[:, 1:]
    np.testing.assert_allclose(episode.logprobs[:, 1:][mask], picked[mask], atol=1e-4)


def test_sampling_in_groups_concatenates_the_same_episodes(params):
    """batches=2 samples problems [0, 2) then [2, 4): greedy episodes equal one pass, row for row."""
    sampler = EpisodeSampler(CONFIG, TOK, TEMPLATE, SETTINGS.replace(greedy=True))
    whole = sampler.sample(params, FIRST_TURNS, INSTRUCTION, rng=jax.random.key(1), num_samples=2)
    grouped = sampler.sample(params, FIRST_TURNS, INSTRUCTION, rng=jax.random.key(1), num_samples=2, batches=2)
    np.testing.assert_array_equal(grouped.prompt_index, whole.prompt_index)
    assert grouped.texts == whole.texts
    np.testing.assert_array_equal(grouped.lengths, whole.lengths)
    np.testing.assert_array_equal(grouped.truncated, whole.truncated)
    for r in range(len(whole.prompt_index)):  # the same tokens in the same order, slots aside
        for ep_a, ep_b in ((grouped, whole),):
            a, b = ep_a.valid[r], ep_b.valid[r]
            np.testing.assert_array_equal(ep_a.tokens[r, a], ep_b.tokens[r, b])
            np.testing.assert_array_equal(ep_a.positions[r, a], ep_b.positions[r, b])
            for k in range(2):
                np.testing.assert_array_equal(ep_a.attempt_masks[k, r, a], ep_b.attempt_masks[k, r, b])
            np.testing.assert_allclose(ep_a.logprobs[r, a], ep_b.logprobs[r, b], atol=1e-5)
    with pytest.raises(ValueError, match="batches=3 must be >= 1 and divide the 4 problems"):
        sampler.sample(params, FIRST_TURNS, INSTRUCTION, rng=jax.random.key(1), batches=3)


def test_reprefill_and_more_attempts(params):
    sampler = EpisodeSampler(CONFIG, TOK, TEMPLATE, SETTINGS.replace(greedy=True))
    kwargs = dict(rng=jax.random.key(0), num_samples=2, num_attempts=3)
    reuse = sampler.sample(params, FIRST_TURNS, INSTRUCTION, **kwargs)
    again = sampler.sample(params, FIRST_TURNS, INSTRUCTION, reprefill=True, **kwargs)
    assert reuse.attempt_masks.shape == (3, 8, 64 + 3 * 12 + 2 * 32)
    np.testing.assert_array_equal(reuse.tokens, again.tokens)
    np.testing.assert_array_equal(reuse.attempt_masks, again.attempt_masks)
    np.testing.assert_allclose(reuse.logprobs, again.logprobs, atol=1e-4)
    assert reuse.texts == again.texts
    assert sampler.sample(
        params,
        FIRST_TURNS,
        INSTRUCTION,
        rng=jax.random.key(0),
        num_attempts=3,
        settings=sampler.settings.replace(greedy=True),
    ).texts == [texts[::2] for texts in reuse.texts]


def test_sharded_episodes_equal_unsharded(params):
    settings = SETTINGS.replace(greedy=True)
    kwargs = dict(rng=jax.random.key(0), num_samples=2, num_attempts=3)  # as above: the same compilations
    want = EpisodeSampler(CONFIG, TOK, TEMPLATE, settings).sample(params, FIRST_TURNS, INSTRUCTION, **kwargs)
    mesh = sharding.make_mesh((2, 2, 2))
    got = EpisodeSampler(CONFIG, TOK, TEMPLATE, settings, mesh=mesh, rules="data_parallel").sample(
        params, FIRST_TURNS, INSTRUCTION, **kwargs
    )
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.attempt_masks, want.attempt_masks)


def test_majority_vote():
    def first_word(t):
        return t.split()[0] if t.split() else None

    assert inference_scaling.majority_vote(["a 1", "b 2", "b 3", "a 4", ""], first_word) == "a 1"  # tie: earliest
    assert inference_scaling.majority_vote(["", "b 2", "b 3", "a 4"], first_word) == "b 2"
    assert inference_scaling.majority_vote(["", " "], first_word) == ""


def test_inference_scaling(params):
    sampler = EpisodeSampler(CONFIG, TOK, TEMPLATE, SETTINGS)
    seen = []

    def grade(text, example):
        seen.append(example)
        return float(len(text) % 2 == 0)

    result = inference_scaling.inference_scaling(
        sampler,
        params,
        examples=["e0", "e1", "e2", "e3"],
        first_turns=FIRST_TURNS,
        instruction=INSTRUCTION,
        grade=grade,
        extract=lambda t: len(t) % 3,
        rng=jax.random.key(2),
        max_budget=4,
    )
    assert sorted(result.parallel) == [1, 2, 4] and sorted(result.corrected) == [2, 4]
    assert all(0 <= v <= 1 and v * 4 == int(v * 4) for v in {**result.parallel, **result.corrected}.values())
    assert seen[:4] == ["e0", "e1", "e2", "e3"]
    assert "budget" in result.table()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_trainer_logprobs_are_the_sampling_distributions(params, temperature):
    # Training at temperature T trains the tempered policy: the train step's log-probs of the sampled
    # tokens (rl.train_step.token_logprobs at T) equal the ones the sampler drew them with.
    from score_jax.rl import train_step

    sampler = EpisodeSampler(CONFIG, TOK, TEMPLATE, SETTINGS.replace(temperature=temperature))
    ep = sampler.sample(params, FIRST_TURNS, INSTRUCTION, rng=jax.random.key(3), num_samples=2)
    logp = train_step.token_logprobs(CONFIG, params, ep.tokens, ep.positions, ep.valid, temperature=temperature)
    mask = ep.attempt_masks.any(axis=0)
    np.testing.assert_allclose(np.asarray(logp)[mask], ep.logprobs[mask], atol=1e-5)
    if temperature != 1.0:  # the untempered log-probs are another distribution's
        plain = train_step.token_logprobs(CONFIG, params, ep.tokens, ep.positions, ep.valid)
        assert np.abs(np.asarray(plain)[mask] - ep.logprobs[mask]).max() > 1e-2


def test_offline_first_attempts_continue_like_one_episode(params):
    # Greedy: attempt 2 after a given attempt 1, re-encoded from scratch, is the attempt 2 the
    # two-attempt sampler writes on its reused cache.
    from score_jax import offline_attempts

    greedy = SETTINGS.replace(greedy=True, max_new_tokens=6)
    sampler = EpisodeSampler(CONFIG, TOK, TEMPLATE, greedy)
    both = sampler.sample(params, FIRST_TURNS, INSTRUCTION, rng=jax.random.key(0), num_attempts=2)
    first = sampler.sample(params, FIRST_TURNS, INSTRUCTION, rng=jax.random.key(0), num_attempts=1)
    ep = offline_attempts.continue_from(sampler, params, first, INSTRUCTION, jax.random.key(5))
    assert ep.texts == both.texts
    np.testing.assert_array_equal(ep.lengths, both.lengths)
    for k in range(2):
        got = [ep.tokens[b][ep.attempt_masks[k, b]] for b in range(len(FIRST_TURNS))]
        want = [both.tokens[b][both.attempt_masks[k, b]] for b in range(len(FIRST_TURNS))]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        np.testing.assert_allclose(ep.logprobs[ep.attempt_masks[k]], both.logprobs[both.attempt_masks[k]], atol=1e-5)
    # The trainer scores it like any episode: each attempt token from the slot before it.
    from score_jax.rl import train_step

    logp = train_step.token_logprobs(CONFIG, params, ep.tokens, ep.positions, ep.valid)
    np.testing.assert_allclose(np.asarray(logp)[ep.attempt_masks[1]], ep.logprobs[ep.attempt_masks[1]], atol=1e-5)
