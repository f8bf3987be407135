"""Ahead-of-time compile check: will this config compile and fit on that mesh? Find out before
reserving a pod.

    python -m score_jax.compile_check --config=configs/stage2_math.py \\
        [--mesh_devices=8 | --topology=v5e:4x4] [--memory_limit_gib=16] [--config.mesh.shape=(1,-1,1)]

Compiles, without running or allocating them, the three programs a training step runs: the train
step (policy and reference log-probs, KL, policy gradient, optax update; arguments as
`score_jax.train.run` passes them) and the sampler's prompt prefill and decode loop, at the
config's largest shapes (global batch for the train step, one `rl.sampling_batches` group for
sampling, largest prompt bucket, every attempt's token budget).
Arguments are `jax.ShapeDtypeStruct`s carrying the mesh shardings, so each program is
partitioned exactly as in a run. For each it prints the compile time and the memory per device
the compiler reports (arguments, outputs, temporaries; sampling also counts the optimizer state
and reference parameters that stay resident while it runs) and exits non-zero when a program
does not compile or its peak exceeds the device memory. With ``model.lora.rank`` > 0 the programs
are LoRA's: the train state holds the adapters and their optimizer state, the base weights are
stored once (in ``model.reference_dtype``) and serve as the reference; run it again with
``--config.model.lora.rank=0`` for the same check with every weight trained.

Targets:
  * default: the devices of the installed backend (e.g. one GPU host);
  * ``--mesh_devices=N``: N devices; on CPU, N emulated host devices (a laptop can check an
    8-way or 256-way partitioning; memory figures are then CPU-compiler estimates);
  * ``--topology=v5e:4x4`` (``v4:2x2x2``, ``v5p:2x2x1``, ``v6e:2x2``, ...): a Cloud TPU slice
    without a TPU, through `jax.experimental.topologies` and libtpu, which pip installs on any
    x86-64 Linux machine: ``pip install "jax[tpu]==$(python -c 'import jax; print(jax.__version__)')"``.
    Multi-host slices compile too (all their chips are devices of the one program), and the
    TPU compiler's memory figures are the ones the real slice would see.

The memory limit is ``--memory_limit_gib``, else what the device reports (GPUs, TPUs), else the
HBM per chip of the TPU generation for ``--topology``; on CPU there is none unless given.
Data paths are not needed (nothing is read or trained); an HF checkpoint's config.json and the
tokenizer files are, for the model's shapes and the prompt layout.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from score_jax import config as config_lib
from score_jax import episodes, run_setup, sampling, sharding
from score_jax.model import init_params, lora
from score_jax.model.transformer import param_shardings
from score_jax.rl import objectives
from score_jax.rl import train_step as step_lib

GIB = 1 << 30

# HBM per chip by `device_kind`, from the Cloud TPU system-architecture pages.
TPU_HBM_BYTES = {
    "TPU v4": 32 * GIB,
    "TPU v5 lite": 16 * GIB,
    "TPU v5e": 16 * GIB,
    "TPU v5": 95 * GIB,
    "TPU v5p": 95 * GIB,
    "TPU v6 lite": 32 * GIB,
    "TPU v6e": 32 * GIB,
}


class CompileCheckError(RuntimeError):
    """A program does not compile for the target, or does not fit its memory."""


@dataclasses.dataclass
class StepReport:
    """One compiled program. Byte counts are per device; None where the backend reports none."""

    name: str
    shapes: str  # the shapes it was compiled for, in words
    compile_s: float
    argument_bytes: int | None
    output_bytes: int | None
    alias_bytes: int | None  # outputs written over donated arguments
    temp_bytes: int | None
    resident_bytes: int  # other arrays on the device while it runs (not among its arguments)

    @property
    def peak_bytes(self) -> int | None:
        """Arguments + outputs not aliased to them + temporaries + other resident arrays."""
        if self.argument_bytes is None:
            return None
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.resident_bytes


@dataclasses.dataclass
class Report:
    mesh: dict[str, int]
    rules: str
    device_kind: str
    num_devices: int
    memory_limit_bytes: int | None
    steps: list[StepReport]
    training: str = ""  # what is trained: every weight, or LoRA adapters (rank, targets, parameter count)

    def table(self) -> str:
        mesh = ", ".join(f"{k}={v}" for k, v in self.mesh.items())
        limit = "unknown" if self.memory_limit_bytes is None else _gib(self.memory_limit_bytes)
        lines = [
            f"compile check: mesh ({mesh}) on {self.num_devices} x {self.device_kind}, rules "
            f"{self.rules}, memory per device: {limit}",
            f"trained: {self.training}",
            f"{'program':<12} {'compile s':>9} {'args':>10} {'outputs':>10} {'temp':>10} {'resident':>10} "
            f"{'peak/device':>12}  shapes",
        ]
        for s in self.steps:
            cells = [_gib(v) for v in (s.argument_bytes, s.output_bytes, s.temp_bytes, s.resident_bytes, s.peak_bytes)]
            lines.append(
                f"{s.name:<12} {s.compile_s:>9.1f} {cells[0]:>10} {cells[1]:>10} {cells[2]:>10} "
                f"{cells[3]:>10} {cells[4]:>12}  {s.shapes}"
            )
        return "\n".join(lines)


def _gib(n: int | None) -> str:
    """A byte count in GiB, MiB or KiB, whichever reads best."""
    if n is None:
        return "n/a"
    for unit, size in (("GiB", GIB), ("MiB", 1 << 20)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n / 1024:.1f} KiB"


# ---------------------------------------------------------------------------------------------
# Targets.


def target_devices(mesh_devices: int = 0, topology: str = "") -> list:
    """The devices to compile for (call before anything else touches a JAX backend)."""
    if topology:
        if mesh_devices:
            raise CompileCheckError("give --topology or --mesh_devices, not both (a topology fixes its chip count)")
        from jax.experimental import topologies

        try:
            desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
        except Exception as err:  # noqa: BLE001 - libtpu missing or an unknown name: say which
            raise CompileCheckError(
                f"cannot describe TPU topology {topology!r} ({type(err).__name__}: {str(err)[:300]}). Names look like "
                "v5e:2x2, v4:2x2x2, v5p:2x2x1; compiling for a TPU without one needs libtpu: "
                'pip install "jax[tpu]==<your jax version>"'
            ) from err
        return list(desc.devices)
    if mesh_devices:
        jax.config.update("jax_num_cpu_devices", mesh_devices)  # only the CPU backend reads it
        devices = jax.devices()
        if len(devices) < mesh_devices:
            raise CompileCheckError(
                f"--mesh_devices={mesh_devices} but the {devices[0].platform} backend has {len(devices)} devices; "
                "run with JAX_PLATFORMS=cpu to emulate the mesh on host devices, or give --topology"
            )
        return devices[:mesh_devices]
    return jax.devices()


def memory_limit(devices: Sequence, override_gib: float = 0.0) -> int | None:
    if override_gib:
        return int(override_gib * GIB)
    try:
        stats = devices[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - topology devices and CPUs have no live statistics
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return TPU_HBM_BYTES.get(getattr(devices[0], "device_kind", ""))


# ---------------------------------------------------------------------------------------------
# The check.


def check(config, devices: Sequence, memory_limit_bytes: int | None = None) -> Report:
    """Compiles the train step, prefill and decode of `config` for a mesh over `devices`.

    Raises:
      config_lib.ConfigError: the config (e.g. its mesh) does not fit the devices.
      CompileCheckError: a program fails to compile (the limit is checked by `enforce_limit`).
    """
    processes = len({getattr(d, "process_index", 0) for d in devices})
    config_lib.validate(_without_data_paths(config), num_devices=len(devices), process_count=processes)
    mesh = sharding.make_mesh(config.mesh.shape, devices)
    rules = sharding.resolve_rules(config.mesh.rules)
    tokenizer = run_setup.build_tokenizer(config)
    policy = run_setup.policy_config(config, tokenizer)
    reference = run_setup.reference_config(config, policy)
    template = run_setup.chat_template(config, policy)
    settings = run_setup.sampling_config(config, template, tokenizer)

    rl = config.rl
    schedule = config_lib.stage_schedule(config)
    attempts = max(objectives.num_attempts_trained(stage, rl.num_attempts) for stage, _ in schedule)
    rows = rl.prompts_per_step * rl.samples_per_prompt
    sample_rows = rows // rl.sampling_batches  # the sampler's batch: one group of prompts
    prompt_len = max(settings.length_buckets)
    sampler = episodes.EpisodeSampler(policy, tokenizer, template, settings, mesh=mesh, rules=rules)
    chunk_len = sampler.instruction_chunk_len(run_setup.correction_instruction(config), attempts)
    slots = episodes.cache_slots(prompt_len, attempts, rl.max_new_tokens, chunk_len)
    width = episodes.train_width(slots)  # every slot used: the widest train batch

    params = _abstract(
        jax.eval_shape(functools.partial(init_params, policy), jax.random.key(0)), param_shardings(policy, mesh, rules)
    )
    if policy.lora is None:
        ref_params = jax.tree.map(
            lambda p: jax.ShapeDtypeStruct(p.shape, jnp.dtype(config.model.reference_dtype), sharding=p.sharding),
            params,
        )
    else:  # the reference is the policy's own base weights
        ref_params = lora.base(params)
    trained = lora.trainable(policy, params)
    tx = run_setup.optimizer(config)
    init_fn = step_lib.make_init_fn(tx, _shardings(trained))
    state = _abstract(jax.eval_shape(init_fn, trained), init_fn.lower(trained).compile().output_shardings)

    reports = []
    batch = {
        "tokens": _rows((rows, width), jnp.int32, mesh, rules),
        "positions": _rows((rows, width), jnp.int32, mesh, rules),
        "valid": _rows((rows, width), jnp.bool_, mesh, rules),
        "attempt_masks": _rows((rows, attempts, width), jnp.float32, mesh, rules),
        "advantages": _rows((rows, attempts), jnp.float32, mesh, rules),
    }
    if rl.kl_in_reward:  # the reference scored the batch before the step (as train.run does)
        batch["ref_logprobs"] = _rows((rows, width), jnp.float32, mesh, rules)
    step_fn = step_lib.make_train_step(
        policy,
        reference,
        tx,
        kl_estimator=rl.kl_estimator,
        kl_in_loss=not rl.kl_in_reward,
        num_microbatches=config.optim.num_microbatches,
        state_shardings=_shardings(state),
        ref_shardings=_shardings(ref_params),
        batch_sharding=_shardings(batch),
        logits_chunk_tokens=config.optim.logits_chunk_tokens,
        temperature=rl.temperature,
    )
    with sharding.use_sharding(mesh, rules):
        compiled, seconds = _compile(
            "train_step",
            lambda: step_fn.lower(state, ref_params, batch, jax.ShapeDtypeStruct((attempts,), jnp.float32)),
        )
    reports.append(
        step_report(
            "train_step",
            f"{rows} episodes x {width} tokens, {attempts} attempts, {config.optim.num_microbatches} micro-batches",
            compiled,
            seconds,
            0,
        )
    )

    # Sampling runs while the optimizer state and the reference parameters stay on the device (under
    # LoRA the reference is the base, which the sampler's parameters already hold).
    resident = _bytes_per_device(state.opt_state) + (_bytes_per_device(ref_params) if policy.lora is None else 0)
    shard = sharding.ShardingContext(mesh, rules)
    cache_fn = sampling.empty_cache.lower(config=policy, batch=sample_rows, length=slots, shard=shard).compile()
    cache = _abstract(
        jax.eval_shape(
            functools.partial(sampling.empty_cache, config=policy, batch=sample_rows, length=slots, shard=shard)
        ),
        cache_fn.output_shardings,
    )
    prompt = [_rows((sample_rows, prompt_len), dtype, mesh, rules) for dtype in (jnp.int32, jnp.int32, jnp.bool_)]
    compiled, seconds = _compile(
        "prefill",
        lambda: sampling.prefill_step.lower(
            params,
            cache,
            *prompt,
            jax.ShapeDtypeStruct((), jnp.int32),
            config=policy,
            shard=shard,
            sub_chunk=settings.prefill_chunk,
        ),
    )
    reports.append(
        step_report(
            "prefill",
            f"{sample_rows} rows x {prompt_len} prompt tokens into {slots} cache slots",
            compiled,
            seconds,
            resident,
        )
    )
    logits_sharding, cache_shardings = compiled.output_shardings
    logits = jax.ShapeDtypeStruct((sample_rows, policy.vocab_size), jnp.float32, sharding=logits_sharding)
    cache = _abstract(cache, cache_shardings)
    compiled, seconds = _compile(
        "decode",
        lambda: sampling.decode_loop.lower(
            params,
            cache,
            logits,
            _rows((sample_rows,), jnp.int32, mesh, rules),
            _rows((sample_rows,), jnp.bool_, mesh, rules),
            jax.eval_shape(jax.random.key, 0),
            config=policy,
            settings=settings,
            shard=shard,
        ),
    )
    reports.append(
        step_report(
            "decode",
            f"{sample_rows} rows x {rl.max_new_tokens} new tokens in {slots} cache slots",
            compiled,
            seconds,
            resident,
        )
    )

    return Report(
        dict(mesh.shape),
        str(config.mesh.rules),
        getattr(devices[0], "device_kind", "?"),
        len(devices),
        memory_limit_bytes,
        reports,
        _training(policy, params),
    )


def _training(policy, params) -> str:
    """What the optimizer trains, in words (for the report's header)."""
    count = lambda tree: sum(math.prod(x.shape) for x in jax.tree.leaves(tree))  # noqa: E731
    if policy.lora is None:
        return f"every weight ({count(params) / 1e6:,.1f}M parameters)"
    adapters = lora.adapters(params)
    return (
        f"LoRA rank {policy.lora.rank}, alpha {policy.lora.alpha:g} on {','.join(policy.lora.targets)}: "
        f"{count(adapters) / 1e6:,.1f}M adapter parameters over {count(lora.base(params)) / 1e6:,.1f}M frozen"
    )


def enforce_limit(report: Report) -> None:
    """Raises CompileCheckError when a program's peak exceeds the report's memory limit."""
    limit = report.memory_limit_bytes
    over = [s for s in report.steps if limit is not None and s.peak_bytes is not None and s.peak_bytes > limit]
    if over:
        worst = max(over, key=lambda s: s.peak_bytes)
        raise CompileCheckError(
            f"{worst.name} needs {_gib(worst.peak_bytes)} per device, more than the {_gib(limit)} available: "
            "shard more (a larger fsdp axis, mesh.rules=fsdp_tensor), store parameters in bfloat16 "
            "(model.param_dtype, model.reference_dtype), use optim.num_microbatches or model.remat_policy for the "
            "train step, or fewer rl.prompts_per_step / rl.max_new_tokens"
        )


def _without_data_paths(config):
    """`config` without what only reading data and checkpoints needs (validated when training)."""
    relaxed = config.copy_and_resolve_references()
    relaxed.unlock()
    relaxed.require_real_paths = False
    relaxed.data.benchmark = "synthetic"
    relaxed.data.manual_dir = ""
    relaxed.rl.init_from = ""
    return relaxed


def _abstract(shapes: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def _shardings(tree: Any) -> Any:
    return jax.tree.map(lambda s: s.sharding, tree)


def _rows(shape: tuple[int, ...], dtype, mesh, rules) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.data_sharding(mesh, rules, shape))


def _bytes_per_device(tree: Any) -> int:
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _compile(name: str, lower):
    start = time.perf_counter()
    try:
        compiled = lower().compile()
    except Exception as err:  # noqa: BLE001 - report which program failed, with the compiler's reason
        raise CompileCheckError(f"{name} does not compile for this mesh: {type(err).__name__}: {err}") from err
    return compiled, time.perf_counter() - start


def step_report(name: str, shapes: str, compiled, seconds: float, resident: int) -> StepReport:
    """A compiled program's memory per device as its compiler reports it (`resident`: other arrays kept alongside)."""
    stats = compiled.memory_analysis()
    if stats is None:
        return StepReport(name, shapes, seconds, None, None, None, None, resident)
    return StepReport(
        name,
        shapes,
        seconds,
        stats.argument_size_in_bytes,
        stats.output_size_in_bytes,
        stats.alias_size_in_bytes,
        stats.temp_size_in_bytes,
        resident,
    )


def main(argv):
    del argv
    from absl import flags

    try:
        devices = target_devices(flags.FLAGS.mesh_devices, flags.FLAGS.topology)
        report = check(flags.FLAGS.config, devices, memory_limit(devices, flags.FLAGS.memory_limit_gib))
        print(report.table(), flush=True)
        enforce_limit(report)
    except (config_lib.ConfigError, sharding.ShardingError, CompileCheckError) as err:
        raise SystemExit(f"compile check FAILED: {err}") from None
    peaks = [s.peak_bytes for s in report.steps if s.peak_bytes is not None]
    fits = "fits" if report.memory_limit_bytes is not None else "compiles (no memory limit known to compare with)"
    print(f"compile check OK: {fits}; largest peak {_gib(max(peaks) if peaks else None)} per device")


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).", lock_config=True)
    flags.DEFINE_integer("mesh_devices", 0, "Compile for this many devices (on CPU: emulated host devices).")
    flags.DEFINE_string("topology", "", "Compile for a Cloud TPU slice without one, e.g. v5e:4x4 (needs libtpu).")
    flags.DEFINE_float("memory_limit_gib", 0.0, "Memory per device to check against (0 = the device's own).")
    flags.mark_flags_as_required(["config"])
    app.run(main)
