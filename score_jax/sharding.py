"""Meshes and logical-axis sharding rules.

Model code names the axes of every parameter and activation with *logical* names (``embed``,
``heads``, ``batch``, ...). A rule set, chosen in the config, maps each logical name to zero or
more axes of the device mesh (``data``, ``fsdp``, ``tensor``). Nothing else in the code base
decides how arrays are split.

Rule sets are ordered ``(logical_name, mesh_axes)`` pairs, where ``mesh_axes`` is ``None`` (not
sharded), a mesh-axis name, or a tuple of mesh-axis names.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

Rules = tuple[tuple[str, Any], ...]

# Logical axes used by the model and the RL code.
LOGICAL_AXES = (
    "batch",  # examples (episodes) in a batch
    "length",  # sequence positions
    "embed",  # model width
    "vocab",  # vocabulary
    "heads",  # query heads
    "kv_heads",  # key/value heads
    "head_dim",  # width of one head
    "mlp",  # hidden width of the MLP
    "layers",  # stacked layers (scan over layers)
    "cache_length",  # slots of the key/value cache
)

# Named rule sets. Every logical axis not listed maps to None (replicated).
RULE_SETS: dict[str, Rules] = {
    # Pure data parallel: parameters replicated, batch split over every mesh axis.
    "data_parallel": (("batch", ("data", "fsdp", "tensor")),),
    # ZeRO-3 style: batch over data and fsdp, parameters split over fsdp along their width.
    "fsdp": (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
    ),
    # fsdp for the batch and parameter width, Megatron-style tensor parallelism for heads and MLP.
    "fsdp_tensor": (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("vocab", "tensor"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("mlp", "tensor"),
    ),
}


class ShardingError(ValueError):
    """A mesh or rule set that cannot work for this model or these devices."""


def resolve_rules(rules: str | Sequence[Sequence[Any]]) -> Rules:
    """Returns a rule tuple from a rule-set name or an explicit list of pairs."""
    if isinstance(rules, str):
        if rules not in RULE_SETS:
            raise ShardingError(f"unknown sharding rule set {rules!r}; known: {sorted(RULE_SETS)}")
        return RULE_SETS[rules]
    out = []
    for pair in rules:
        if len(pair) != 2:
            raise ShardingError(f"a sharding rule is a (logical_axis, mesh_axes) pair, got {pair!r}")
        name, axes = pair
        if isinstance(axes, list):
            axes = tuple(axes)
        for axis in axes if isinstance(axes, tuple) else (axes,):
            if axis is not None and axis not in MESH_AXES:
                raise ShardingError(f"rule {pair!r} names mesh axis {axis!r}; mesh axes are {MESH_AXES}")
        out.append((name, axes))
    return tuple(out)


def make_mesh(shape: Sequence[int] | dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a ``(data, fsdp, tensor)`` mesh.

    Args:
      shape: sizes of the three axes, as a sequence or a dict; one size may be -1, meaning "all
        remaining devices".
      devices: devices to use (default: all of ``jax.devices()``, across every process).
    """
    if isinstance(shape, dict):
        unknown = set(shape) - set(MESH_AXES)
        if unknown:
            raise ShardingError(f"unknown mesh axes {sorted(unknown)}; mesh axes are {MESH_AXES}")
        shape = [shape.get(axis, 1) for axis in MESH_AXES]
    shape = [int(s) for s in shape]
    if len(shape) != len(MESH_AXES):
        raise ShardingError(f"mesh shape {shape} must give one size for each of {MESH_AXES}")
    devices = list(jax.devices() if devices is None else devices)
    if shape.count(-1) > 1:
        raise ShardingError(f"mesh shape {shape}: at most one axis may be -1")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known <= 0 or len(devices) % known:
            raise ShardingError(f"mesh shape {shape} does not divide the {len(devices)} devices")
        shape[shape.index(-1)] = len(devices) // known
    if any(s <= 0 for s in shape):
        raise ShardingError(f"mesh shape {shape} has a non-positive axis size")
    if math.prod(shape) != len(devices):
        raise ShardingError(
            f"mesh shape {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
            f"but {len(devices)} are available"
        )
    try:
        device_array = mesh_utils.create_device_mesh(shape, devices=devices)
    except Exception:  # noqa: BLE001 - topology-aware placement is best effort (e.g. CPU).
        device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, MESH_AXES)


def logical_to_spec(names: Sequence[str | None], rules: Rules) -> PartitionSpec:
    """Maps logical axis names to a PartitionSpec, never using one mesh axis twice."""
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name in names:
        axes = table.get(name) if name is not None else None
        if axes is None:
            spec.append(None)
            continue
        axes_tuple = axes if isinstance(axes, tuple) else (axes,)
        free = tuple(a for a in axes_tuple if a not in used)
        used.update(free)
        spec.append(free if len(free) > 1 else (free[0] if free else None))
    return PartitionSpec(*spec)


def shardings_for_logical(abstract_boxed_params: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a tree of ``nn.LogicallyPartitioned`` (abstract) parameters.

    Axes whose size the mesh axes do not divide are replicated instead, so tiny test models and
    MQA (one key/value head) work on any mesh.
    """

    def one(leaf):
        if isinstance(leaf, nn.LogicallyPartitioned):
            names, shape = leaf.names, leaf.value.shape
        else:
            names, shape = (None,) * np.ndim(leaf), np.shape(leaf)
        spec = logical_to_spec(names, rules)
        return NamedSharding(mesh, _drop_indivisible(spec, shape, mesh))

    return jax.tree.map(one, abstract_boxed_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _drop_indivisible(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        if axes is None:
            out.append(None)
            continue
        axes_tuple = axes if isinstance(axes, tuple) else (axes,)
        size = math.prod(mesh.shape[a] for a in axes_tuple)
        out.append(axes if dim % size == 0 else None)
    return PartitionSpec(*out)


# ---------------------------------------------------------------------------------------------
# Activation constraints. Model code calls `constrain(x, names)`; it is a no-op unless a
# `ShardingContext` is active while the computation is traced.


@dataclasses.dataclass(frozen=True)
class ShardingContext:
    mesh: Mesh
    rules: Rules

    def sharding(self, names: Sequence[str | None], shape: Sequence[int] | None = None) -> NamedSharding:
        spec = logical_to_spec(names, self.rules)
        if shape is not None:
            spec = _drop_indivisible(spec, shape, self.mesh)
        return NamedSharding(self.mesh, spec)


_ACTIVE: contextvars.ContextVar[ShardingContext | None] = contextvars.ContextVar("score_jax_sharding", default=None)


@contextlib.contextmanager
def use_sharding(mesh: Mesh, rules: Rules) -> Iterator[ShardingContext]:
    """Activates logical activation constraints for code traced inside the block."""
    ctx = ShardingContext(mesh, resolve_rules(rules))
    token = _ACTIVE.set(ctx)
    try:
        yield ctx
    finally:
        _ACTIVE.reset(token)


def active() -> ShardingContext | None:
    return _ACTIVE.get()


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names; a no-op outside `use_sharding`."""
    ctx = _ACTIVE.get()
    if ctx is None:
        return x
    return jax.lax.with_sharding_constraint(x, ctx.sharding(names, x.shape))


def data_sharding(mesh: Mesh, rules: Rules, shape: Sequence[int]) -> NamedSharding:
    """Sharding for a ``[batch, ...]`` array of `shape`: batch split by the rules, the rest
    replicated (a batch the batch axes do not divide is replicated, as parameters are)."""
    names = ("batch",) + (None,) * (len(shape) - 1)
    return ShardingContext(mesh, resolve_rules(rules)).sharding(names, shape)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
