"""SCoRe Stage I on code: train on MBPP (3-shot first turns), evaluate on HumanEval (zero-shot).

    python -m score_jax.main --config=configs/stage1_code.py --workdir=$WORKDIR \
        --config.model.hf_checkpoint=/path/to/gemma-2-2b-it \
        --config.data.manual_dir=/path/to/code_files

Needs: an HF checkpoint directory, and mbpp.jsonl plus HumanEval.jsonl.gz in the manual
directory (third_party/DATASETS.md). Rewards run the programs in score_jax's sandbox.
Settings: `score_jax.config.paper_config` (the paper's MBPP hyperparameters, beta2 = 0.25).

On a laptop, the same path shrunk (tiny model, fixture data, two steps):
    python -m score_jax.main --config=configs/stage1_code.py:runlocal --workdir=/tmp/stage1_code_local
"""

from score_jax import config as config_lib


def get_config(options: str = ""):
    """`options`: "runlocal" shrinks the run to a tiny model and a few steps on a CPU (real data path)."""
    runlocal = "runlocal" in config_lib.config_options(options, ("runlocal",))
    c = config_lib.paper_config("code")
    c.rl.schedule = "stage1:500"
    return config_lib.runlocal(c) if runlocal else c
