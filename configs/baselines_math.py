"""The paper's MATH baselines, one config file with a variant argument:

    python -m score_jax.main --config=configs/baselines_math.py:star --workdir=$WORKDIR \
        --config.model.hf_checkpoint=/path/to/model --config.data.manual_dir=/path/to/math_files

Variants (paper, MATH500 Acc@t1 / Acc@t2 / Delta, Gemini 1.5 Flash):
  self_refine   Self-Refine: answer, self-feedback, refinement; no training (52.8 / 51.8 / -1.0)
  star          STaR, D+_STaR: 3 ReST-EM rounds of SFT on w->c and c->c traces (53.6 / 54.0 / +0.4)
  pair_sft      Pair-SFT, D_SFT: one epoch on (wrong, random correct) pairs (52.4 / 54.2 / +1.8)
  star_stage2   ablation "STaR instead of REINFORCE in Stage II": Stage I by RL (1000 steps, as in
                configs/stage2_math.py), then the STaR rounds from the Stage I policy (56.2 / 58.4 / +2.2)
  multi_turn    multi-turn RL, each attempt rewarded with its own reward: no shaping, no Stage I
                (3000 steps; the paper's multi-turn RL baseline)

Each writes the table (the base model, Stage I where run, and the method) to $WORKDIR/eval_table.md.
Not in the paper, ours: the SFT batch and warmup, 4 samples per problem for the traces, and the
loss on the corrected attempt only (score_jax/baselines/collect.py).

Any variant shrunk to a laptop run: configs/baselines_math.py:pair_sft,runlocal
"""

from score_jax import baselines
from score_jax import config as config_lib

_VARIANTS = ("self_refine", "star", "pair_sft", "star_stage2", "multi_turn")


def get_config(options: str = "star"):
    """`options`: one variant, optionally with "runlocal" (``:star,runlocal``) to run it shrunk."""
    variant, runlocal = baselines.config_variant(options, _VARIANTS, "configs/baselines_math.py")
    c = config_lib.paper_config("math")
    c.method = {"star_stage2": "star", "multi_turn": "rl"}.get(variant, variant)
    c.rl.schedule = "multi_turn:3000" if variant == "multi_turn" else "stage1:1000,stage2:2000"
    c.sft.batch_size = 64
    c.sft.learning_rate = 5e-6  # the paper's RL learning rate for MATH
    c.baseline.star_stage1_steps = 1000 if variant == "star_stage2" else 0
    return baselines.runlocal(c) if runlocal else c
