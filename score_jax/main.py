"""Entry point: ``python -m score_jax.main --config=configs/stage2_math.py --workdir=DIR``.

Flags only; the library does the work: `score_jax.train.run` (``method="rl"``: SCoRe and the
multi-turn RL baselines), `score_jax.baselines.run` (``method`` self_refine, star or pair_sft), or
`score_jax.demo.run` for the offline demo config. Override any config field with
``--config.rl.alpha=5``.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from score_jax import cli, distributed

cli.drop_unknown_overrides()  # before the config flag parses: a misspelt field gets a plain "did you mean"
_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and reports (resumed if present).")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume even if the overrides change training settings (the changes are printed)."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; progress lines go to stdout
    config = _CONFIG.value
    distributed.initialize(**config.distributed)
    if config.get("demo") is not None:
        from score_jax import demo

        demo.run(config, _WORKDIR.value)
    elif config.method != "rl":
        from score_jax import baselines

        baselines.run(config, _WORKDIR.value)
    else:
        from score_jax import train

        train.run(config, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)


if __name__ == "__main__":
    cli.run(main)  # absl's app.run, with config problems printed as one message (exit 2), no traceback
