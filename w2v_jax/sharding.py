"""Device meshes and parameter partitioning rules (pjit style: explicit shardings).

Mesh axes: `data` (batch), `fsdp` (batch and parameter shards) and `tensor`
(Megatron-style attention and feed-forward splits). Parameters follow the first
matching rule of `RULES`; any other parameter is sharded over `fsdp` on its largest
dimension that the axis divides, and replicated when none does.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# (regex on "a/b/c" parameter paths, mesh axes for the trailing dimensions). First match wins.
RULES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"attention/(q|k|v)_proj/kernel$", ("fsdp", "tensor")),
    (r"attention/(q|k|v)_proj/bias$", ("tensor",)),
    (r"attention/out_proj/kernel$", ("tensor", "fsdp")),
    (r"feed_forward/intermediate_dense/kernel$", ("fsdp", "tensor")),
    (r"feed_forward/intermediate_dense/bias$", ("tensor",)),
    (r"feed_forward/output_dense/kernel$", ("tensor", "fsdp")),
)
# Stacked encoder-layer parameters keep their leading (layer) axis whole: scan slices it.
_STACKED = re.compile(r"(^|/)encoder/layers/")


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axes; -1 for `data` takes the devices left over."""
    devices = list(devices if devices is not None else jax.devices())
    if data == -1:
        if len(devices) % (fsdp * tensor):
            raise ValueError(f"fsdp={fsdp} x tensor={tensor} does not divide {len(devices)} devices")
        data = len(devices) // (fsdp * tensor)
    if min(data, fsdp, tensor) < 1 or data * fsdp * tensor != len(devices):
        raise ValueError(f"mesh data={data} x fsdp={fsdp} x tensor={tensor} does not match "
                         f"{len(devices)} devices")
    return jax.make_mesh((data, fsdp, tensor), AXES, axis_types=(AxisType.Auto,) * 3,
                         devices=devices)


def partition_spec(path: str, shape: tuple[int, ...], mesh: Mesh) -> P:
    """The PartitionSpec of one parameter, by rule or by the FSDP default."""
    sizes = dict(mesh.shape)
    first = 1 if _STACKED.search(path) else 0
    spec: list[Any] = [None] * len(shape)
    for pattern, axes in RULES:
        if re.search(pattern, path):
            for dim, axis in zip(range(len(shape) - len(axes), len(shape)), axes):
                if axis and shape[dim] % sizes[axis] == 0 and sizes[axis] > 1:
                    spec[dim] = axis
            return P(*spec)
    if sizes["fsdp"] > 1:
        candidates = [d for d in range(first, len(shape)) if shape[d] % sizes["fsdp"] == 0]
        if candidates:
            spec[max(candidates, key=lambda d: shape[d])] = "fsdp"
    return P(*spec)


def state_shardings(state: nnx.State, mesh: Mesh) -> nnx.State:
    """NamedShardings for every array of an nnx State (parameters and optimizer moments alike)."""
    def sharding(path, leaf):
        names = "/".join(str(k.key if hasattr(k, "key") else k.idx) for k in path
                         if not isinstance(k, jax.tree_util.GetAttrKey))  # skip Variable.value
        shape = np.shape(leaf)
        return NamedSharding(mesh, partition_spec(names, shape, mesh) if shape else P())
    return jax.tree_util.tree_map_with_path(sharding, state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis over data and fsdp; the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))
