"""Everything a run builds once from its config, shared by training, evaluation, the demo and the
compile check.

``build(config, workdir)`` validates the config, then makes the mesh, the tokenizer and chat
template, the policy's parameters (an HF checkpoint or a seeded init, created sharded) and the
frozen reference, and the task. The other functions are the pieces, usable without data or
weights (the compile check needs only shapes): `policy_config`, `reference_config`,
`chat_template`, `sampling_config`, `optimizer`, `checkpoint_dir`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from score_jax import config as config_lib
from score_jax import data, sharding, tasks
from score_jax.model import ModelConfig, get_preset, init_params, lora
from score_jax.model.config import LoraConfig
from score_jax.rl import train_step as step_lib
from score_jax.sampling import SamplingConfig
from score_jax.tokenizer import ByteTokenizer, ChatTemplate, Tokenizer, get_chat_template


@dataclasses.dataclass
class Setup:
    """Everything a run builds once from its config."""

    config: Any
    mesh: jax.sharding.Mesh
    rules: sharding.Rules
    model_config: ModelConfig
    ref_config: ModelConfig
    tokenizer: Tokenizer
    template: ChatTemplate
    params: Any  # initial policy parameters (sharded; under LoRA the base arrays plus fresh adapters)
    ref_params: Any  # frozen reference parameters (sharded, possibly bf16; under LoRA the policy's own base arrays)
    task: tasks.Task


def build(config, workdir: str) -> Setup:
    """Validates `config` (before anything compiles) and builds the run's pieces."""
    config_lib.validate(config, num_devices=jax.device_count(), process_count=jax.process_count())
    mesh = sharding.make_mesh(config.mesh.shape)
    rules = sharding.resolve_rules(config.mesh.rules)
    tokenizer = build_tokenizer(config)
    model_config, params = build_model(config, mesh, rules, tokenizer)
    template = chat_template(config, model_config)
    ref_config = reference_config(config, model_config)
    if model_config.lora is None:
        params, ref_params = policy_and_reference(params, config.model.reference_dtype)
    else:  # the reference is the base: the policy's own frozen arrays, adapters off
        ref_params = lora.base(params)
    task = tasks.build_task_on_all_processes(config, data_dir=dataset_dir(config, workdir))
    return Setup(config, mesh, rules, model_config, ref_config, tokenizer, template, params, ref_params, task)


def dataset_dir(config, workdir: str) -> str | None:
    """Where the run's datasets are built and read (``data.data_dir``): None = the shared cache
    (`score_jax.data.load`'s default, $SCORE_JAX_DATA_DIR or ~/.cache/score_jax/datasets), or
    ``<workdir>/tfds`` for "workdir", or the path given."""
    if config.data.data_dir == "workdir":
        return os.path.join(workdir, "tfds")
    return config.data.data_dir or None


# ---------------------------------------------------------------------------------------------
# The model.


def build_tokenizer(config) -> Tokenizer:
    """``model.tokenizer``: the byte tokenizer, a tokenizer file, or the checkpoint's own."""
    if config.model.tokenizer == "byte":
        return ByteTokenizer()
    from score_jax import tokenizer as tok_lib

    return tok_lib.load_tokenizer(config.model.tokenizer or config.model.hf_checkpoint)


def model_numerics(config) -> dict:
    """The ModelConfig fields ``config.model`` sets whatever the architecture (dtypes, remat, scan).

    Under LoRA the base weights are stored once, frozen, in ``model.reference_dtype`` (they are the
    reference); ``model.param_dtype`` is then the adapters' dtype (`lora_config`).
    """
    m = config.model
    return dict(
        param_dtype=m.reference_dtype if m.lora.rank else m.param_dtype,
        dtype=m.dtype,
        remat_policy=m.remat_policy,
        scan_layers=m.scan_layers,
        attention_impl=m.attention_impl,
    )


def lora_config(config) -> LoraConfig | None:
    """``model.lora`` as the model's LoraConfig (adapters stored in ``model.param_dtype``); None when rank is 0."""
    m = config.model
    if not m.lora.rank:
        return None
    return LoraConfig(
        rank=m.lora.rank, alpha=m.lora.alpha, targets=config_lib.lora_targets(config), param_dtype=m.param_dtype
    )


def base_config(config, tokenizer: Tokenizer) -> ModelConfig:
    """The base model's ModelConfig (no adapters): the HF checkpoint's config.json, or the preset."""
    numerics = model_numerics(config)
    if config.model.hf_checkpoint:
        from score_jax.checkpoints import hf

        with open(os.path.join(config.model.hf_checkpoint, "config.json"), encoding="utf-8") as f:
            return hf.model_config_from_hf(json.load(f), **numerics)
    overrides = dict(config.model.overrides.to_dict()) if config.model.overrides else {}
    preset = get_preset(config.model.preset, **numerics, **overrides)
    if tokenizer.vocab_size > preset.vocab_size:
        raise config_lib.ConfigError(
            f"tokenizer has {tokenizer.vocab_size} tokens but model preset {config.model.preset!r} only "
            f"{preset.vocab_size}; set --config.model.overrides.vocab_size={tokenizer.vocab_size}"
        )
    return preset


def policy_config(config, tokenizer: Tokenizer) -> ModelConfig:
    """The policy's ModelConfig without its weights: the base's, with ``model.lora``'s adapters."""
    return base_config(config, tokenizer).replace(lora=lora_config(config))


def reference_config(config, model_config: ModelConfig) -> ModelConfig:
    """The frozen reference's ModelConfig: the policy's architecture and compute dtype, no adapters, its
    parameters stored in ``model.reference_dtype`` (see `policy_and_reference`)."""
    return model_config.replace(param_dtype=config.model.reference_dtype, remat_policy="none", lora=None)


def build_model(config, mesh, rules, tokenizer: Tokenizer) -> tuple[ModelConfig, Any]:
    """The policy's config and initial parameters: the base (an HF checkpoint, or a seeded random
    init), with fresh adapters laid in under LoRA."""
    if config.model.hf_checkpoint:
        from score_jax.checkpoints import hf

        model_config, params = hf.load_hf_checkpoint(
            config.model.hf_checkpoint, mesh=mesh, rules=rules, **model_numerics(config)
        )
    else:
        model_config = base_config(config, tokenizer)
        params = init_params(model_config, jax.random.key(config.seed), mesh, rules)
    adapters = lora_config(config)
    if adapters is None:
        return model_config, params
    model_config = model_config.replace(lora=adapters)
    key = jax.random.fold_in(jax.random.key(config.seed), 1)  # not the base's init key
    return model_config, lora.merge(params, lora.init_adapters(model_config, key, mesh, rules))


def reference_copy(params: Any, dtype: str) -> Any:
    """A frozen copy of `params` in `dtype`, sharded like them (never aliasing donated buffers)."""
    target = jnp.dtype(dtype)
    shardings = jax.tree.map(lambda x: x.sharding, params)
    return jax.jit(lambda p: jax.tree.map(lambda x: jnp.array(x, dtype=target, copy=True), p), out_shardings=shardings)(
        params
    )


def policy_and_reference(params: Any, reference_dtype: str) -> tuple[Any, Any]:
    """The policy's starting parameters and the frozen reference, computing exactly alike at step 0.

    The reference holds the parameters in `reference_dtype` and computes like the policy (same
    architecture and compute dtype, `reference_config`). Where `reference_dtype` is narrower than
    the parameters (float32 parameters, a bfloat16 reference), the policy starts from the
    parameters rounded to it, which is what a bfloat16 checkpoint holds anyway; every value the
    reference can hold is then one the policy holds too, so the two give the same log-probs to the
    last bit until the first update, and Stage I's KL reads 0 before anything moved. Any
    combination of float32 / bfloat16 parameters, compute and reference is exact this way.
    """
    target = jnp.dtype(reference_dtype)
    shardings = jax.tree.map(lambda x: x.sharding, params)
    rounded = jax.jit(lambda p: jax.tree.map(lambda x: x.astype(target).astype(x.dtype), p), out_shardings=shardings)(
        params
    )
    return rounded, reference_copy(rounded, reference_dtype)


# ---------------------------------------------------------------------------------------------
# Prompts and sampling.


def chat_template(config, model_config: ModelConfig) -> ChatTemplate:
    """The configured template; else the byte tokenizer's (gemma-style turns) or the checkpoint's own
    (its family's, told apart by the tokenizer's Jinja template where families have variants)."""
    from score_jax import tokenizer as tok_lib

    if config.model.chat_template:
        return get_chat_template(config.model.chat_template)
    if config.model.tokenizer == "byte":
        return get_chat_template("gemma")
    source = config.model.tokenizer or config.model.hf_checkpoint
    directory = source if os.path.isdir(source) else os.path.dirname(source)
    return tok_lib.template_for_checkpoint(directory, model_config.family, thinking=config.model.thinking)


def correction_instruction(config) -> str:
    """The correction instruction `score_jax.tasks.build_task` uses for training (no data read)."""
    if config.data.benchmark == "synthetic":
        return data.get_preset("synthetic", "synthetic").correction_instruction
    task = {"math": "math", "code": "humaneval"}[config.data.benchmark]  # MBPP and HumanEval share it
    return data.get_preset(config.data.prompt_preset, task).correction_instruction


def sampling_config(
    config, template: ChatTemplate, tokenizer: Tokenizer, *, evaluation: bool = False
) -> SamplingConfig:
    """Sampling settings: training's (``rl.temperature``, top-k/top-p) or greedy evaluation's."""
    rl = config.rl
    common = dict(
        stop_token_ids=template.stop_ids(tokenizer),
        length_buckets=tuple(rl.prompt_buckets),
        pad_id=tokenizer.pad_id,
        prefill_chunk=rl.prefill_chunk or None,
    )
    if evaluation:
        return SamplingConfig(max_new_tokens=config.eval.max_new_tokens or rl.max_new_tokens, greedy=True, **common)
    return SamplingConfig(
        max_new_tokens=rl.max_new_tokens,
        temperature=rl.temperature,
        top_k=rl.top_k or None,
        top_p=rl.top_p if rl.top_p < 1 else None,
        **common,
    )


# ---------------------------------------------------------------------------------------------
# Optimisation and checkpoints.


def total_steps(config) -> int:
    """Steps of the whole ``rl.schedule``."""
    return sum(n for _, n in config_lib.stage_schedule(config))


def optimizer(config) -> optax.GradientTransformation:
    """The run's optimizer (``config.optim``, its schedule spanning every stage)."""
    o = config.optim
    return step_lib.make_optimizer(
        o.learning_rate,
        o.warmup_steps,
        total_steps(config),
        o.schedule,
        o.b1,
        o.b2,
        o.weight_decay,
        o.grad_clip_norm or None,
    )


def learning_rate_schedule(config) -> optax.Schedule:
    """The learning rate of each update of `optimizer` (update 0 first)."""
    o = config.optim
    return step_lib.learning_rate_schedule(o.learning_rate, o.warmup_steps, total_steps(config), o.schedule)


def lora_base(config, ref_params: Any) -> dict:
    """What a LoRA run's checkpoints record of the base its adapters sit on: where it came from and a
    fingerprint of its weights (`score_jax.model.lora.fingerprint`)."""
    source = config.model.hf_checkpoint or f"random init of {config.model.preset} (seed {config.seed})"
    return {"path": source, "fingerprint": lora.fingerprint(ref_params)}


def check_lora_base(extra: dict, current: dict, where: str) -> None:
    """Refuses adapters saved on other base weights than `current` (a `lora_base` record)."""
    saved = extra.get("lora_base")
    if saved is None:
        raise config_lib.ConfigError(
            f"{where} holds no LoRA adapters (its run trained every weight, model.lora.rank=0); "
            "restore it with model.lora.rank=0"
        )
    if saved["fingerprint"] != current["fingerprint"]:
        raise config_lib.ConfigError(
            f"{where} holds LoRA adapters trained on other base weights: {saved['path']} "
            f"(fingerprint {saved['fingerprint'][:16]}...), but the base loaded now, {current['path']}, has "
            f"fingerprint {current['fingerprint'][:16]}...; pass the checkpoint the adapters were trained on "
            "(model.hf_checkpoint) or start a new run"
        )


def restore_policy(config, model_config: ModelConfig, params: Any, path: str, step: int | None = None):
    """(step, policy parameters, extra) of a run's checkpoint (`path`: its checkpoint directory or a
    step folder; the newest step unless `step`). `params` are the policy's initial parameters, as
    `build_model` returns them: under LoRA the adapters are restored over their base, which must
    be the one they were trained on (else ConfigError)."""
    from score_jax.checkpoints import manager as ckpt_lib

    state = step_lib.init_train_state(lora.trainable(model_config, params), optimizer(config))
    step, state, extra = ckpt_lib.restore_from_path(path, ckpt_lib.abstract_like(state), step)
    base = lora.base(params) if model_config.lora is not None else None
    if base is not None:
        check_lora_base(extra, lora_base(config, base), path)
    return step, lora.policy_params(model_config, base, state.params), extra


def checkpoint_dir(config, workdir: str) -> str:
    """Where the run's checkpoints live: ``checkpoint.directory``, else ``<workdir>/checkpoints``."""
    return config.checkpoint.directory or os.path.join(workdir, "checkpoints")


def latest_checkpoint_step(config, workdir: str) -> int | None:
    """The newest step folder under the run's checkpoint directory (None: no checkpoint yet)."""
    from etils import epath

    directory = epath.Path(checkpoint_dir(config, workdir))
    if not directory.is_dir():
        return None
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()]
    return max(steps) if steps else None


# ---------------------------------------------------------------------------------------------
# The run's own config (<workdir>/config.json).

RUN_CONFIG = "config.json"
# Fields whose change mid-run changes what is trained (a resume with another value is refused unless
# allowed): a field here covers every field under it. Memory and speed settings are left out.
TRAINING_FIELDS = (
    "seed",
    "method",
    "model",
    "optim.learning_rate",
    "optim.warmup_steps",
    "optim.schedule",
    "optim.b1",
    "optim.b2",
    "optim.weight_decay",
    "optim.grad_clip_norm",
    "data.benchmark",
    "data.train",
    "data.prompt_preset",
    "data.validation_size",
    "rl",
)
MEMORY_FIELDS = (
    "model.remat_policy",
    "model.attention_impl",
    "rl.sampling_batches",
    "rl.prefill_chunk",
    "rl.prompt_buckets",
)


def write_run_config(config, workdir: str) -> None:
    """Writes ``<workdir>/config.json`` (process 0 only)."""
    if jax.process_index() == 0:
        with open(os.path.join(workdir, RUN_CONFIG), "w", encoding="utf-8") as f:
            f.write(config.to_json_best_effort(indent=2))


def load_run_config(workdir: str) -> ml_collections.ConfigDict | None:
    """The config a run in `workdir` was started with (its config.json), or None if there is none.

    Fields are laid over `score_jax.config.base_config()`, so tuples stay tuples and command-line
    overrides parse as they do on a config file; fields the base lacks (a demo's) are kept as saved.
    """
    path = os.path.join(workdir, RUN_CONFIG)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    config = config_lib.base_config()
    _lay_over(config, saved)
    return config


def _lay_over(config: ml_collections.ConfigDict, saved: dict) -> None:
    with config.unlocked():
        for key, value in saved.items():
            current = config.get(key)
            if isinstance(value, dict):
                if not isinstance(current, ml_collections.ConfigDict):
                    config[key] = ml_collections.ConfigDict()
                _lay_over(config[key], value)
            elif isinstance(current, tuple) and isinstance(value, list):
                config[key] = tuple(value)
            else:
                config[key] = value


def flat_config(config) -> dict[str, Any]:
    """{"dotted.field": value} of every leaf of `config`, as its JSON holds it (tuples as lists)."""
    return _flat(json.loads(config.to_json_best_effort()))


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def training_changes(saved, config) -> list[tuple[str, Any, Any]]:
    """(field, saved value, new value) for every `TRAINING_FIELDS` field that differs."""
    old, new = flat_config(saved), flat_config(config)

    def covered(field):
        under = lambda names: any(field == n or field.startswith(n + ".") for n in names)  # noqa: E731
        return under(TRAINING_FIELDS) and not under(MEMORY_FIELDS)

    fields = sorted(f for f in set(old) | set(new) if covered(f))
    return [(f, old.get(f), new.get(f)) for f in fields if old.get(f) != new.get(f)]


def check_resume(config, workdir: str, allow_config_change: bool = False) -> list[str]:
    """Refuses to resume a run in `workdir` with training settings other than its config.json's.

    Returns the changes (as lines, for the log) when `allow_config_change`; raises ConfigError
    naming each changed field otherwise. Nothing to check before the run's first checkpoint.
    """
    saved = load_run_config(workdir)
    if saved is None or latest_checkpoint_step(config, workdir) is None:
        return []
    lines = [f"{f}: {old!r} -> {new!r}" for f, old, new in training_changes(saved, config)]
    if lines and not allow_config_change:
        raise config_lib.ConfigError(
            f"{workdir} holds a run started with other training settings ({os.path.join(workdir, RUN_CONFIG)}):\n"
            + "\n".join(f"  - {line}" for line in lines)
            + "\nresume with the run's settings (drop these overrides), use a new --workdir, or pass "
            "--allow_config_change to continue with the new ones"
        )
    return lines
