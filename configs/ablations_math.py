"""The paper's MATH ablations, one config file with a variant argument:

    python -m score_jax.main --config=configs/ablations_math.py:single_turn --workdir=$WORKDIR \
        --config.model.hf_checkpoint=/path/to/model --config.data.manual_dir=/path/to/math_files

Variants (paper, MATH500 Acc@t1/Acc@t2/Delta):
  single_turn       single-turn RL on first attempts only (61.8 / 59.4 / -2.4)
  no_stage1         multi-turn RL straight into Stage II (59.2 / 61.4 / +2.2)
  no_shaping        Stage I then Stage II with alpha = 0 (60.0 / 62.6 / +2.6)
  naive_multi_turn  reward on attempt 2 only, no Stage I constraint (collapses: Delta ~ 0)

Any variant shrunk to a laptop run: configs/ablations_math.py:no_shaping,runlocal
"""

from score_jax import config as config_lib

_VARIANTS = ("single_turn", "no_stage1", "no_shaping", "naive_multi_turn")


def get_config(options: str = "no_stage1"):
    """`options`: one variant, optionally with "runlocal" (``:single_turn,runlocal``) to run it shrunk."""
    chosen = config_lib.config_options(options, _VARIANTS + ("runlocal",))
    variants = chosen - {"runlocal"}
    if len(variants) != 1:
        raise config_lib.ConfigError(
            f"choose one ablation of {_VARIANTS} (configs/ablations_math.py:VARIANT), got {sorted(variants)}"
        )
    (variant,) = variants
    c = config_lib.paper_config("math")
    steps = 3000  # the same budget as SCoRe
    c.rl.schedule = {
        "single_turn": f"single_turn:{steps}",
        "no_stage1": f"stage2:{steps}",
        "no_shaping": "stage1:1000,stage2:2000",
        "naive_multi_turn": f"naive_multi_turn:{steps}",
    }[variant]
    if variant == "no_shaping":
        c.rl.alpha = 0.0
    return config_lib.runlocal(c) if "runlocal" in chosen else c
