"""Device meshes, and parameter shardings by logical axes (MaxText's logical_axis_rules).

Mesh axes: `data` (batch), `fsdp` (batch and parameter shards) and `tensor` (Megatron-style
attention and feed-forward splits). Each parameter names the logical axis of every dimension
where it is made (`nnx.Param(value, **axes("embed"))`, `nnx.Linear(..., kernel_metadata=axes(...))`);
LOGICAL_RULES maps each name to a mesh axis or None (replicated). A dimension that its mesh
axis does not divide is a ShardingError naming the parameter and the mesh, never a silent
replication. Optimizer moments carry their parameter's names (optax maps over the Params), so
they shard like it.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
LOGICAL = "logical_axes"  # the Param metadata key
# The one rule table: logical axis -> mesh axis (None: replicated).
LOGICAL_RULES: dict[str, str | None] = {
    "embed": "fsdp",          # the model width (hidden_size)
    "heads": "tensor",        # attention projections' features, head-major
    "mlp": "tensor",          # the feed-forward inner width
    "conv_out": "fsdp",       # CNN output channels
    "conv_in": None,          # CNN input channels (1 for the first layer)
    "conv_width": None,       # convolution kernel widths
    "conv_features": None,    # the CNN's features entering the projection (embed takes fsdp)
    "layers": None,           # the stacked encoder layers' axis (scan slices it)
    "classes": None,          # classifier outputs (5 tones, 2 sexes)
}
# A parameter stacked over layers (jnp.stack of one layer's params) has one dimension more than
# it declares: the leading one.
STACKED = "layers"


class ShardingError(ValueError):
    """A parameter without logical axes, or one whose mesh axis does not divide its dimension."""


def axes(*names: str) -> dict[str, tuple[str, ...]]:
    """Param metadata naming the logical axis of each dimension: nnx.Param(v, **axes("embed"))."""
    unknown = [n for n in names if n not in LOGICAL_RULES]
    if unknown:
        raise ShardingError(f"logical axes {unknown} have no rule in LOGICAL_RULES")
    return {LOGICAL: tuple(names)}


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


def partition_spec(name: str, names: tuple[str, ...] | None, shape: tuple[int, ...], mesh: Mesh) -> P:
    """The PartitionSpec of the parameter `name` whose dimensions are logically `names`."""
    if not shape:
        return P()
    if names is None:
        raise ShardingError(f"parameter {name} {shape} declares no logical axes "
                            f"(metadata {axes.__module__}.axes(...) where it is made)")
    if len(shape) == len(names) + 1:
        names = (STACKED, *names)
    if len(shape) != len(names):
        raise ShardingError(f"parameter {name} {shape}: logical axes {names} do not match its shape")
    sizes = dict(mesh.shape)
    spec: list[Any] = []
    for dim, (size, logical) in enumerate(zip(shape, names)):
        axis = LOGICAL_RULES[logical]
        if axis is None or sizes[axis] == 1:
            spec.append(None)
            continue
        if size % sizes[axis]:
            raise ShardingError(f"parameter {name} {shape}: dimension {dim} ({logical}={size}) "
                                f"does not divide over mesh axis {axis!r} of size {sizes[axis]} "
                                f"(mesh {sizes}); LOGICAL_RULES may replicate {logical!r} (None)")
        if axis in spec:
            raise ShardingError(f"parameter {name} {shape}: logical axes {names} use mesh axis "
                                f"{axis!r} twice")
        spec.append(axis)
    return P(*spec)


def state_shardings(tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for every array of a tree of nnx Variables (parameters, optimizer moments,
    RNG state): by each Variable's logical axes; scalars and non-Variables replicated."""
    def of_variable(path, node):
        if not isinstance(node, nnx.Variable):
            return jax.tree.map(lambda leaf: NamedSharding(mesh, P()), node)
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        names = node.get_metadata().get(LOGICAL)
        return jax.tree.map(
            lambda leaf: NamedSharding(mesh, partition_spec(name, names, tuple(leaf.shape), mesh)), node)
    return jax.tree_util.tree_map_with_path(of_variable, tree,
                                            is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis over data and fsdp; the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))
