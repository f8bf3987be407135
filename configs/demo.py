"""The embedded default: SCoRe working end to end on a CPU, offline, in minutes.

    python -m score_jax.main --config=configs/demo.py --workdir=/tmp/score_demo

Generates a synthetic task (linear equations modulo a small prime: checking an answer is one
substitution, producing it needs a modular inverse), trains a small base model with the
self-correction habits of real models, then runs naive multi-turn RL and SCoRe (Stage I, then
Stage II) with equal budgets, and writes report.md (the paper's table), acc_over_training.png
and TensorBoard logs to the workdir. Three seeds: --config.demo.seeds=0,1,2.
"""

import ml_collections

from score_jax.config import base_config


def get_config():
    c = base_config()
    c.model.preset = "tiny_llama"
    c.model.tokenizer = "byte"
    c.model.chat_template = "compact"  # one token per turn boundary: short episodes
    c.model.overrides = ml_collections.ConfigDict(
        dict(
            vocab_size=261,
            d_model=96,
            num_layers=3,
            num_heads=4,
            num_kv_heads=2,
            head_dim=24,
            mlp_dim=384,
            rope_llama3_scaling=None,
            rope_theta=10_000.0,
        )
    )
    c.mesh.shape = (1, 1, -1)
    c.mesh.rules = "data_parallel"
    c.data.benchmark = "synthetic"
    c.data.synthetic_difficulty = "demo"  # one x term, p in {7, 11, 13}: 3,532 distinct problems
    c.data.synthetic_size = 2800  # train problems; a quarter as many (700) held out for evaluation
    c.rl.prompts_per_step = 32
    c.rl.samples_per_prompt = 4
    c.rl.max_new_tokens = 12  # "12x=10 x=11" plus the end-of-turn token fits
    c.rl.prompt_buckets = (24, 32, 48)
    c.rl.alpha = 10.0
    c.rl.beta1 = 0.01
    c.rl.beta2 = 0.1
    c.optim.learning_rate = 1e-4
    c.optim.warmup_steps = 5
    c.checkpoint.every_steps = 50
    c.eval.num_examples = 300
    c.eval.batch_size = 150
    c.log_every_steps = 10

    c.demo = ml_collections.ConfigDict()
    c.demo.seeds = "0"  # comma-separated seeds; the report averages over them
    c.demo.traces_per_problem = 2  # supervised traces per training problem
    c.demo.first_correct_easy = 0.9  # traces: attempt 1 right on problems with a small divisor
    c.demo.first_correct_hard = 0.3  # traces: attempt 1 right on problems with a large divisor
    c.demo.break_rate = 0.1  # traces: a right attempt 1 turned wrong in attempt 2 (c->i)
    c.demo.fix_rate = 0.2  # traces: a wrong attempt 1 fixed in attempt 2 (i->c)
    c.demo.sft_steps = 1000  # base-model supervised steps
    c.demo.sft_batch_size = 64  # traces per supervised step
    c.demo.sft_learning_rate = 2e-3  # peak supervised learning rate (cosine decay)
    c.demo.stage1_steps = 60  # SCoRe Stage I steps
    c.demo.stage2_steps = 120  # SCoRe Stage II steps (naive multi-turn RL gets stage1 + stage2 steps)
    c.demo.eval_every_steps = 30  # held-out evaluation interval (the plot's points)
    return c
