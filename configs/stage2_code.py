"""SCoRe on code: Stage I then Stage II on MBPP, evaluated on HumanEval.

    python -m score_jax.main --config=configs/stage2_code.py --workdir=$WORKDIR \
        --config.model.hf_checkpoint=/path/to/gemma-2-2b-it \
        --config.data.manual_dir=/path/to/code_files

From a separate Stage I run: --config.rl.schedule=stage2:1000 --config.rl.init_from=$STAGE1/checkpoints.
Needs an HF checkpoint and mbpp.jsonl + HumanEval.jsonl.gz (third_party/DATASETS.md).
Expect on HumanEval (paper, Gemini 1.0 Pro): Acc@t1 52.4, Acc@t2 64.6, Delta +12.2.
Settings: `score_jax.config.paper_config` (1500 steps in all, as in the paper).

On a laptop, the same path shrunk (tiny model, fixture data, two steps):
    python -m score_jax.main --config=configs/stage2_code.py:runlocal --workdir=/tmp/stage2_code_local
"""

from score_jax import config as config_lib


def get_config(options: str = ""):
    """`options`: "runlocal" shrinks the run to a tiny model and a few steps on a CPU (real data path)."""
    runlocal = "runlocal" in config_lib.config_options(options, ("runlocal",))
    c = config_lib.paper_config("code")
    c.rl.schedule = "stage1:500,stage2:1000"
    return config_lib.runlocal(c) if runlocal else c
