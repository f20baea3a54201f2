"""The device mesh and logical-axis sharding rules.

The mesh has three named axes, `data`, `fsdp` and `tensor` (in that order), sized by
`mesh.shape` (one entry may be -1: it takes the remaining devices). Arrays are annotated with
*logical* axis names (`batch`, `embed`, `mlp`, `heads`, `vocab`, ...); the ordered rules in
`mesh.rules` map each logical name to mesh axes, first match wins (flax's
`logical_to_mesh_axes`, as maxtext does).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
from flax import linen as nn
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from dlm.errors import DlmError

MESH_AXES = ("data", "fsdp", "tensor")


def resolve_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Fills one -1 entry of a mesh shape; checks that the shape uses exactly the devices."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise DlmError(f"mesh.shape={shape} must have {len(MESH_AXES)} entries {MESH_AXES}")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise DlmError(f"mesh.shape={shape}: entries must be positive, with at most one -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise DlmError(f"mesh.shape={shape} does not divide the {num_devices} devices")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise DlmError(
        f"mesh.shape={shape} needs {math.prod(shape)} devices but {num_devices} are available"
    )
  return shape


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over all devices (or `devices`) with Auto axes, shaped by `mesh.shape`."""
  devices = list(devices) if devices is not None else jax.devices()
  shape = resolve_shape(shape, len(devices))
  return jax.make_mesh(
      shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
  )


def normalize_rules(rules) -> tuple:
  """Rules as nested tuples (a config restored from JSON holds lists): hashable, as flax wants."""
  def freeze(x):
    return tuple(freeze(v) for v in x) if isinstance(x, (list, tuple)) else x

  return freeze(rules)


def logical_spec(names: Sequence[str | None], rules) -> PartitionSpec:
  """PartitionSpec for an array whose dimensions carry the given logical names."""
  return nn.logical_to_mesh_axes(tuple(names), rules=normalize_rules(rules))


def named_sharding(mesh: Mesh, names: Sequence[str | None], rules) -> NamedSharding:
  return NamedSharding(mesh, logical_spec(names, rules))


def batch_axes_size(mesh: Mesh, rules) -> int:
  """How many ways the `batch` logical axis is split on this mesh."""
  spec = logical_spec(("batch",), rules)[0]
  axes = (spec,) if isinstance(spec, str) else tuple(spec or ())
  return math.prod(mesh.shape[a] for a in axes)
