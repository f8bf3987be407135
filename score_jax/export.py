"""Export a training run's policy as a transformers checkpoint, rebuilt from the run's config.json.

    python -m score_jax.export --workdir=$WORKDIR [--step=N|best] --out=$OUT [--format=hf|peft]

Everything (architecture, scanned or unrolled layers, dtypes, LoRA, the checkpoint directory, the
base checkpoint whose tokenizer and generation files are copied) comes from ``$WORKDIR/config.json``;
the newest checkpoint is exported unless ``--step`` names one (``best``: the kept best one).

``--format=hf`` writes the whole policy (a LoRA run's adapters merged into the weights); it loads
with ``transformers.AutoModelForCausalLM.from_pretrained($OUT)``. ``--format=peft`` writes a LoRA
run's adapters alone (``adapter_config.json``, ``adapter_model.safetensors``), which
``peft.PeftModel.from_pretrained(base, $OUT)`` loads onto the base model the run trained on.
"""

from __future__ import annotations

import os

import jax

from score_jax import config as config_lib
from score_jax import run_setup, sharding
from score_jax.checkpoints import hf
from score_jax.model import lora

FORMATS = ("hf", "peft")
DIR_MODE, FILE_MODE = 0o755, 0o644


def export(workdir: str, out: str, step: str = "", fmt: str = "hf") -> int:
    """Writes the policy of the run in `workdir` at `step` ("" = newest, "best", or a number) to
    `out` in `fmt`; returns the step exported. Collective with several processes (process 0 writes).
    """
    if fmt not in FORMATS:
        raise config_lib.ConfigError(f"--format={fmt!r} is unknown; choose one of {FORMATS}")
    config = run_setup.load_run_config(workdir)
    if config is None:
        raise config_lib.ConfigError(
            f"{workdir} has no {run_setup.RUN_CONFIG}: pass the --workdir of a training run "
            "(score_jax.main writes config.json there when it starts)"
        )
    # Any mesh restores the checkpoint; the run's own may not fit the devices exporting.
    mesh, rules = sharding.make_mesh((1, -1, 1)), sharding.resolve_rules("fsdp")
    tokenizer = run_setup.build_tokenizer(config)
    if fmt == "peft" and not config.model.lora.rank:
        raise config_lib.ConfigError(
            f"--format=peft: the run in {workdir} trained every weight (model.lora.rank=0), so it has no LoRA "
            "adapters to export; use --format=hf for the full model"
        )
    if step and step != "best" and not step.isdigit():
        raise config_lib.ConfigError(f"--step={step!r}: give a step number, best, or nothing for the newest")
    model_config, params = run_setup.build_model(config, mesh, rules, tokenizer)
    path = run_setup.checkpoint_dir(config, workdir)
    if step == "best":
        path = os.path.join(path, "best")
    exported, params, _ = run_setup.restore_policy(
        config, model_config, params, path, step=int(step) if step.isdigit() else None
    )
    source = config.model.hf_checkpoint or None
    if fmt == "peft":
        hf.save_peft_adapters(model_config, params, out, base_model=source or "")
    else:
        merged = lora.merged_weights(model_config, params)
        hf.save_hf_checkpoint(model_config.replace(lora=None), merged, out, source_dir=source)
    if jax.process_index() == 0:
        ordinary_permissions(out)
    return exported


def ordinary_permissions(directory: str) -> None:
    """0755 on `directory` and the folders in it, 0644 on its files (it is built in a private temp dir)."""
    os.chmod(directory, DIR_MODE)
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            os.chmod(os.path.join(root, name), DIR_MODE)
        for name in files:
            os.chmod(os.path.join(root, name), FILE_MODE)


def main(argv):
    from absl import flags, logging

    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    f = flags.FLAGS
    step = export(f.workdir, f.out, f.step, f.format)
    if jax.process_index() == 0:
        print(f"exported step {step} of {f.workdir} to {f.out} ({f.format})", flush=True)


if __name__ == "__main__":
    from absl import flags

    from score_jax import cli

    flags.DEFINE_string("workdir", None, "The training run's directory (its config.json and checkpoints).")
    flags.DEFINE_string("out", None, "Output directory (replaced if it exists).")
    flags.DEFINE_string("step", "", "Checkpoint step to export: a number, best, or empty for the newest.")
    flags.DEFINE_enum(
        "format", "hf", FORMATS, "hf: a transformers checkpoint (adapters merged); peft: a LoRA run's adapters."
    )
    flags.mark_flags_as_required(["workdir", "out"])
    cli.run(main)
