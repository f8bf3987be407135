"""The embedded default and the pre-registered study, on the pair-sum task, on a CPU, offline.

    python -m score_jax.main --config=configs/demo.py --workdir=/tmp/score_demo
    python -m score_jax.main --config=configs/demo.py:study --workdir=/tmp/score_study

The task (`score_jax.data.pair_sum`): "13 5 27 8 31 2 to 35" -> "27+8=35", the one pair of the list
that adds up to the target. Finding it is a search a small model cannot do reliably in one pass;
checking a written candidate is one comparison, so a second attempt keeps its value at the
optimum. A small base model is trained first on traces with real LLMs' self-correction habits
(`score_jax.habit_traces`: it second-guesses right answers as often as wrong ones), then the
methods train copies of it with equal sample and update budgets (`score_jax.demo.METHODS`).

Options (``configs/demo.py:OPTION[,OPTION]``):
  (none)      the quick demo: one seed; base model, naive multi-turn RL, SCoRe; report.md with the
              paper's table and the accuracy curves. At most 15 minutes on a 2-core CPU.
  study       every method of the paper's Tables 2 and 4, the reporting seeds, evaluation on the
              held-out test split, the task's properties, collapse diagnostics, Pair-SFT's shift,
              inference-time scaling and transcripts (docs/study.md is its committed report).
  validation  with study: the design runs (validation seeds, validation split carved from train).
  tiny        shrinks everything to seconds (tests).

Every design choice below was fixed on the validation split with the validation seeds before the
study's reporting seeds ran once on the test split (docs/study.md, "Pre-registration").
"""

import ml_collections

from score_jax import config as config_lib
from score_jax.config import base_config
from score_jax.demo_methods import METHODS

_OPTIONS = ("study", "validation", "tiny")

# The quick demo's rows, and the study's (the paper's Tables 2 and 4, base model first).
DEMO_METHODS = ("base model", "naive multi-turn RL", "SCoRe")
STUDY_METHODS = tuple(METHODS)  # every row of score_jax.demo_methods.METHODS, in its order


def get_config(options: str = ""):
    chosen = config_lib.config_options(options, _OPTIONS) if options else set()
    if "validation" in chosen and "study" not in chosen:
        raise config_lib.ConfigError("'validation' is a phase of the study: use configs/demo.py:study,validation")
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
    c.data.synthetic_difficulty = "pairs"  # pair sums: five numbers in [1, 29], one pair adds up to the target
    c.data.synthetic_size = 8000  # train problems (a quarter as many, 2000, held out as the test split)
    c.data.validation_size = 500  # carved from train: the design runs evaluate here, never on test
    c.rl.prompts_per_step = 8
    c.rl.samples_per_prompt = 8  # 8 x 8: fewer groups with equal rewards than 16 x 4 at the same cost (validation)
    c.rl.max_new_tokens = 10  # "27+38=65" plus the end-of-turn token fits
    c.rl.prompt_buckets = (32, 48)
    c.rl.alpha = 10.0  # the paper's MATH alpha
    c.rl.beta1 = 0.01  # the paper's beta1
    c.rl.beta2 = 0.1  # the paper's beta2
    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 5
    c.checkpoint.every_steps = 50
    c.eval.num_examples = 500  # problems per evaluation (of the 2000 test or 500 validation problems)
    c.eval.batch_size = 500
    c.log_every_steps = 10
    c.sft.learning_rate = 2e-4  # the SFT baselines (STaR, Pair-SFT): the RL methods' learning rate
    c.sft.batch_size = 8  # the SFT baselines: traces per update, as many as an RL step's prompts

    c.demo = ml_collections.ConfigDict()
    c.demo.study = False  # the whole comparison and its probes (configs/demo.py:study)
    c.demo.phase = "test"  # evaluate on the test split; "validation": on the validation split (design runs)
    c.demo.methods = DEMO_METHODS  # rows, in order (score_jax.demo.METHODS)
    c.demo.seeds = "0"  # comma-separated training seeds; the report gives means and 95% intervals over them
    c.demo.base_seed = 0  # the shared base model's SFT seed (and the probes' sampling seed)
    c.demo.traces_per_problem = 2  # base-model supervised traces per training problem
    c.demo.first_wrong = 0.2  # traces: attempt 1 is a near miss this often
    c.demo.revise_digits = (1, 4, 7)  # traces: attempt 2 revises when the target ends in one of these
    c.demo.revision = "next"  # traces: how attempt 2 revises: "next" (second-guess) or "research" (search again)
    c.demo.complement_rate = 0.0  # traces: attempt 2 completes attempt 1's right number this often
    c.demo.sft_steps = 600  # base-model supervised steps
    c.demo.sft_batch_size = 64  # traces per supervised step
    c.demo.sft_learning_rate = 2e-3  # peak supervised learning rate (cosine decay)
    c.demo.stage1_steps = 30  # SCoRe Stage I steps
    c.demo.stage2_steps = 60  # SCoRe Stage II steps; every method gets stage1 + stage2 steps of budget
    c.demo.compilation_cache = True  # keep compiled programs in <workdir>/jax_cache: methods and seeds share them
    c.demo.eval_every_steps = 15  # evaluation interval during training (the curves' points)
    # The study's probes (score_jax.demo_probes):
    c.demo.ceiling_factor = 2  # the first-attempt ceiling run trains this many times the methods' budget
    c.demo.probe_problems = 500  # eval problems for the probes (transcripts, shift, check-then-retry)
    c.demo.retry_samples = 8  # check-then-retry: first attempts sampled to pick the retry from
    c.demo.scaling_methods = ("SCoRe",)  # methods whose inference-time scaling is measured
    c.demo.scaling_problems = 200  # problems for inference-time scaling
    c.demo.scaling_max_budget = 32  # K = 2 .. this, majority vote over K vs K/2 corrected samples

    if "study" in chosen:
        c.demo.study = True
        c.demo.methods = STUDY_METHODS
        c.demo.seeds = "21,22,23,24,25"  # fresh reporting seeds (study 1 used 11-15), never used in design runs
        # The second registered design (docs/study.md, "Pre-registration of study 2"), fixed on validation:
        c.demo.sft_steps = 2000  # the base adds instead of copying the target (93.8% true sums; 600 steps: 33%)
        c.demo.complement_rate = 0.3  # base fixes 4-6% of its wrong answers at T=1 and keeps the paper's greedy profile
        c.optim.learning_rate = 2e-4  # validation: SCoRe Acc@t2 42.0 at 2e-4 vs 36.4 at 3e-4 (naive 40.6 vs 38.6)
        # STaR in the budget: 3 rounds (the paper's), each sampling a third of the RL methods' problems.
        c.baseline.star_iterations = 3
        c.sft.checkpoint_every_steps = 25  # Pair-SFT's shift is measured at each kept checkpoint
        c.checkpoint.max_to_keep = 10
    if "validation" in chosen:
        c.demo.phase = "validation"
        c.demo.seeds = "101,102"  # design seeds, disjoint from the reporting seeds
    if "tiny" in chosen:
        tiny(c)
    return c


def tiny(c):
    """Everything shrunk to seconds: the same code path, for tests."""
    c.model.overrides.d_model = 32
    c.model.overrides.num_layers = 1
    c.model.overrides.head_dim = 8
    c.model.overrides.mlp_dim = 64
    c.data.synthetic_size = 200
    c.data.validation_size = 16
    c.rl.prompts_per_step = 4
    c.rl.samples_per_prompt = 2
    c.eval.num_examples = 8
    c.eval.batch_size = 8
    c.sft.batch_size = 4
    c.sft.checkpoint_every_steps = 1
    c.baseline.star_iterations = 2 if c.demo.study else c.baseline.star_iterations
    c.demo.sft_steps = 4
    c.demo.sft_batch_size = 16
    c.demo.stage1_steps = 2
    c.demo.stage2_steps = 2
    c.demo.eval_every_steps = 2
    c.demo.probe_problems = 8
    c.demo.retry_samples = 2
    c.demo.scaling_problems = 4
    c.demo.scaling_max_budget = 4
    if c.demo.study:
        c.demo.seeds = "101,102" if c.demo.phase == "validation" else "11,12"
    return c
