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
import optax

from score_jax import config as config_lib
from score_jax import data, sharding, tasks
from score_jax.model import ModelConfig, get_preset, init_params
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
    params: Any  # initial policy parameters (sharded)
    ref_params: Any  # frozen reference parameters (sharded, possibly bf16)
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
    params, ref_params = policy_and_reference(params, config.model.reference_dtype)
    task = tasks.build_task_on_all_processes(config, data_dir=os.path.join(workdir, "tfds"))
    return Setup(config, mesh, rules, model_config, ref_config, tokenizer, template, params, ref_params, task)


# ---------------------------------------------------------------------------------------------
# The model.


def build_tokenizer(config) -> Tokenizer:
    """``model.tokenizer``: the byte tokenizer, a tokenizer file, or the checkpoint's own."""
    if config.model.tokenizer == "byte":
        return ByteTokenizer()
    from score_jax import tokenizer as tok_lib

    return tok_lib.load_tokenizer(config.model.tokenizer or config.model.hf_checkpoint)


def model_numerics(config) -> dict:
    """The ModelConfig fields ``config.model`` sets whatever the architecture (dtypes, remat, scan)."""
    m = config.model
    return dict(
        param_dtype=m.param_dtype,
        dtype=m.dtype,
        remat_policy=m.remat_policy,
        scan_layers=m.scan_layers,
        attention_impl=m.attention_impl,
    )


def policy_config(config, tokenizer: Tokenizer) -> ModelConfig:
    """The policy's ModelConfig without its weights: the HF checkpoint's config.json, or the preset."""
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


def reference_config(config, model_config: ModelConfig) -> ModelConfig:
    """The frozen reference's ModelConfig: the policy's architecture and compute dtype, its parameters
    stored in ``model.reference_dtype`` (see `policy_and_reference`)."""
    return model_config.replace(param_dtype=config.model.reference_dtype, remat_policy="none")


def build_model(config, mesh, rules, tokenizer: Tokenizer) -> tuple[ModelConfig, Any]:
    """Model config and initial (base) parameters: an HF checkpoint, or a seeded random init."""
    if config.model.hf_checkpoint:
        from score_jax.checkpoints import hf

        return hf.load_hf_checkpoint(config.model.hf_checkpoint, mesh=mesh, rules=rules, **model_numerics(config))
    policy = policy_config(config, tokenizer)
    return policy, init_params(policy, jax.random.key(config.seed), mesh, rules)


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


def checkpoint_dir(config, workdir: str) -> str:
    """Where the run's checkpoints live: ``checkpoint.directory``, else ``<workdir>/checkpoints``."""
    return config.checkpoint.directory or os.path.join(workdir, "checkpoints")
