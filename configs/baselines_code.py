"""The paper's code baselines: trained (Pair-SFT) or prompted (Self-Refine) on MBPP, evaluated on
HumanEval, with a variant argument:

    python -m score_jax.main --config=configs/baselines_code.py:pair_sft --workdir=$WORKDIR \
        --config.model.hf_checkpoint=/path/to/model --config.data.manual_dir=/path/to/code_files

Variants (paper, HumanEval Acc@t1 / Acc@t2 / Delta, Gemini 1.0 Pro; the paper ran no STaR on code):
  self_refine   Self-Refine: answer, self-feedback, refinement; no training (53.7 / 52.5 / -1.2)
  pair_sft      Pair-SFT, D_SFT: one epoch on (wrong, random correct) pairs (56.1 / 54.3 / -1.8)
  multi_turn    multi-turn RL, each attempt rewarded with its own reward: no shaping, no Stage I

Each writes the table (the base model and the method) to $WORKDIR/eval_table.md. The SFT settings
are ours (configs/baselines_math.py says which).

Any variant shrunk to a laptop run (MBPP / HumanEval fixtures, the sandbox grades):
    python -m score_jax.main --config=configs/baselines_code.py:self_refine,runlocal --workdir=/tmp/sr_code
"""

from score_jax import baselines
from score_jax import config as config_lib

_VARIANTS = ("self_refine", "pair_sft", "multi_turn")


def get_config(options: str = "pair_sft"):
    """`options`: one variant, optionally with "runlocal" (``:pair_sft,runlocal``) to run it shrunk."""
    variant, runlocal = baselines.config_variant(options, _VARIANTS, "configs/baselines_code.py")
    c = config_lib.paper_config("code")
    c.method = "rl" if variant == "multi_turn" else variant
    c.rl.schedule = "multi_turn:1500" if variant == "multi_turn" else "stage1:500,stage2:1000"
    c.sft.batch_size = 32
    c.sft.learning_rate = 1e-5  # the paper's RL learning rate for MBPP
    return baselines.runlocal(c) if runlocal else c
