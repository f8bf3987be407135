"""The paper's baselines: STaR's and Pair-SFT's trace rules on hand-made samples, the trace layout
against a sampled episode, per-gap instructions (Self-Refine's turns), and the scoring of
Self-Refine. The end-to-end runs of the baselines' runlocal configs are in test_baselines_runlocal.py."""

import jax
import numpy as np
import pytest

from score_jax import config as config_lib
from score_jax import run_setup
from score_jax.baselines import collect, pair_sft, self_refine, star
from score_jax.data import prompts
from score_jax.episodes import EpisodeSampler
from score_jax.tokenizer import ByteTokenizer, get_chat_template

TOK, TEMPLATE = ByteTokenizer(), get_chat_template("gemma")
EOT = TOK.token_id(TEMPLATE.end_of_turn)
INSTRUCTION = "Check and fix:"


def hand_made_samples() -> collect.Samples:
    """Six rows on three problems; attempt k of row r is the tokens [10 r + k, eot] (row 5 truncated)."""
    correct = np.array([[0, 0, 1, 1, 0, 1], [0, 1, 0, 1, 1, 1]], bool)  # i->i, i->c, c->i, c->c, i->c, c->c
    return collect.Samples(
        prompts=[[100 + r // 2] for r in range(6)],
        first=[[10 * r + 1, EOT] for r in range(6)],
        second=[[10 * r + 2] + ([] if r == 5 else [EOT]) for r in range(6)],
        correct=correct,
        problem=np.array([0, 0, 1, 1, 2, 2]),
    )


def chunk(closed=True):
    return TEMPLATE.continuation(TOK, INSTRUCTION, closed)


def test_star_keeps_wrong_to_correct_and_correct_to_correct_traces():
    samples = hand_made_samples()
    np.testing.assert_array_equal(star.select(samples.correct), [1, 3, 4, 5])  # D+_STaR
    np.testing.assert_array_equal(star.select(samples.correct, correct_to_correct=False), [1, 4])  # D_STaR
    traces = star.traces(samples, TEMPLATE, TOK, INSTRUCTION, correct_to_correct=False)
    context = [100, 11, EOT, *chunk()]
    assert traces[0] == (context + [12, EOT], [False] * len(context) + [True, True])
    assert traces[1][0] == [102, 41, EOT, *chunk(), 42, EOT]
    with pytest.raises(ValueError, match="shape"):
        star.select(np.ones((3, 4), bool))


def test_pair_sft_pairs_each_wrong_response_with_a_correct_one_to_its_problem():
    problem = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    correct = np.array([0, 1, 0, 1, 0, 0, 1, 0], bool)
    pairs = pair_sft.make_pairs(problem, correct, np.random.default_rng(0))
    # Wrong responses 0, 2 (problem 0: correct 1 or 3), 7 (problem 2: correct 6); problem 1 has no
    # correct response, so its wrong ones 4 and 5 give no pair.
    assert [i for i, _ in pairs] == [0, 2, 7]
    assert all(j in (1, 3) for _, j in pairs[:2]) and pairs[2] == (7, 6)
    with_correct = pair_sft.make_pairs(problem, correct, np.random.default_rng(0), correct_to_correct=True)
    assert [i for i, _ in with_correct] == [0, 1, 2, 3, 6, 7]
    assert all(correct[j] and problem[j] == problem[i] for i, j in with_correct)
    # The correction is drawn uniformly among the problem's correct responses.
    drawn = [pair_sft.make_pairs(problem, correct, np.random.default_rng(s))[0][1] for s in range(200)]
    assert 0.35 < np.mean(np.array(drawn) == 1) < 0.65


def test_pair_sft_traces_draw_from_first_and_second_attempts():
    samples = hand_made_samples()
    # Responses: the rows' first attempts (0-5), then their second attempts (6-11). Problem 0's only
    # correct response is row 1's second attempt (token 12); problem 1 has 21, 31, 32; problem 2 51, 42, 52.
    traces = pair_sft.pair_traces(samples, TEMPLATE, TOK, INSTRUCTION, np.random.default_rng(0))
    at = 3 + len(chunk())  # the correction's first token: after the prompt, the wrong response + eot, the turn
    fixes = [(ids[1], ids[at]) for ids, _ in traces]
    assert [wrong for wrong, _ in fixes] == [1, 11, 41, 2, 22]  # every wrong response, in order
    assert [fix for _, fix in fixes][:2] == [12, 12] and fixes[3] == (2, 12)
    assert fixes[2][1] in (51, 42, 52) and fixes[4][1] in (21, 31, 32)
    for ids, mask in traces:
        assert sum(mask) == len(ids) - at and all(mask[at:])  # the loss is on the correction only
        if ids[at] == 52:  # row 5's second attempt was truncated: no end-of-turn token to learn
            assert ids[at:] == [52]


def tiny_setup(tmp_path):
    c = config_lib.base_config()
    c.model.overrides.vocab_size = 261
    c.mesh.shape = (8, 1, 1)
    c.mesh.rules = "data_parallel"
    c.rl.prompt_buckets = (32, 64)
    c.data.synthetic_size = 16
    return run_setup.build(c, str(tmp_path))


def test_trace_layout_is_the_sampled_episode(tmp_path):
    setup = tiny_setup(tmp_path)
    settings = run_setup.sampling_config(setup.config, setup.template, setup.tokenizer).replace(max_new_tokens=6)
    sampler = EpisodeSampler(setup.model_config, setup.tokenizer, setup.template, settings, mesh=setup.mesh)
    turns = [setup.task.preset.first_turn(setup.task.train[i]) for i in range(4)]
    instruction = setup.task.preset.correction_instruction
    episode = sampler.sample(setup.params, turns, instruction, rng=jax.random.key(1), num_samples=2)
    for row in range(8):
        ids, mask = collect.two_attempt_trace(
            setup.template,
            setup.tokenizer,
            *collect.episode_row(episode, row)[:2],
            instruction,
            collect.episode_row(episode, row)[2],
        )
        valid = episode.valid[row]
        assert ids == episode.tokens[row][valid].tolist()
        assert mask == episode.attempt_masks[1, row][valid].tolist()


def test_per_gap_instructions_put_each_text_in_its_gap(tmp_path):
    setup = tiny_setup(tmp_path)
    settings = run_setup.sampling_config(setup.config, setup.template, setup.tokenizer).replace(max_new_tokens=3)
    sampler = EpisodeSampler(setup.model_config, setup.tokenizer, setup.template, settings, mesh=setup.mesh)
    feedback, refine = prompts.self_refine_instructions("synthetic")
    turns = [setup.task.preset.first_turn(setup.task.train[i]) for i in range(8)]
    episode = sampler.sample(setup.params, turns, (feedback, refine), rng=jax.random.key(0), num_attempts=3)
    for row in range(8):
        masks, valid = episode.attempt_masks[:, row], episode.valid[row]
        between = [
            TOK.decode(
                episode.tokens[row][(np.cumsum(masks[k]) > 0) & (np.cumsum(masks[k + 1]) == 0) & valid & ~masks[k]]
            )
            for k in range(2)
        ]
        assert feedback in between[0] and refine not in between[0]
        assert refine in between[1] and feedback not in between[1]
    with pytest.raises(ValueError, match="2 instruction texts"):
        sampler.sample(setup.params, turns, (feedback, refine), rng=jax.random.key(0), num_attempts=2)


def test_self_refine_scores_the_answer_and_the_refinement_not_the_feedback():
    records = [
        {
            "attempt1": "x=1",
            "attempt2": "looks wrong",
            "attempt3": "x=2",
            "correct1": False,
            "correct2": True,
            "correct3": True,
        },
        {
            "attempt1": "x=3",
            "attempt2": "fine",
            "attempt3": "x=3",
            "correct1": True,
            "correct2": False,
            "correct3": True,
        },
    ]
    scored = self_refine.score(records, answer=lambda t: t)
    assert scored["acc_t1"] == 0.5 and scored["acc_t2"] == 1.0 and scored["delta_i2c"] == 0.5
    assert scored["answer_changed"] == 0.5 and scored["num_problems"] == 2


def test_self_refine_prompts_are_there_for_every_task():
    for task in ("math", "mbpp", "humaneval", "synthetic"):
        feedback, refine = prompts.self_refine_instructions(task)
        assert feedback != refine
    assert "Final Answer: The final answer is $answer$" in prompts.self_refine_instructions("math")[1]
    with pytest.raises(ValueError, match="'chess'"):
        prompts.self_refine_instructions("chess")


def test_method_and_baseline_fields_are_validated():
    c = config_lib.base_config()
    c.method = "rest"
    with pytest.raises(config_lib.ConfigError, match="method='rest'"):
        config_lib.validate(c)
    c = config_lib.base_config()
    c.baseline.star_iterations = 0
    with pytest.raises(config_lib.ConfigError, match="star_iterations=0"):
        config_lib.validate(c)


@pytest.mark.parametrize(
    "name, variant",
    [("baselines_math", v) for v in ("self_refine", "star", "pair_sft", "star_stage2", "multi_turn")]
    + [("baselines_code", v) for v in ("self_refine", "pair_sft", "multi_turn")],
)
def test_real_baseline_configs_validate_given_their_paths(name, variant, tmp_path):
    from test_runlocal import load_config

    c = load_config(name, variant)
    with pytest.raises(config_lib.ConfigError, match="--config.model.hf_checkpoint="):
        config_lib.validate(c, num_devices=8)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "gemma2"}')
    c.model.hf_checkpoint, c.data.manual_dir = str(tmp_path / "model"), str(tmp_path)
    config_lib.validate(c, num_devices=8)
    assert c.method == {"star_stage2": "star", "multi_turn": "rl"}.get(variant, variant)
    with pytest.raises(config_lib.ConfigError, match="choose one of"):
        load_config(name, "self_refine,pair_sft")
