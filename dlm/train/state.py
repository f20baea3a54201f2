"""The train state, its shardings, and sharded initialisation.

Parameters are plain nested dicts of arrays (`nnx.to_pure_dict`), merged with the model's
graph definition inside `jit`. Each parameter's sharding comes from the logical names it
carries, mapped by the ordered rules in `mesh.rules`; optimizer moments follow their
parameters (`optax.tree_map_params`), everything else is replicated. The state is created
directly in its shardings (`jit` with `out_shardings`), never whole on one device.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from dlm import sharding
from dlm.errors import DlmError


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: updates applied so far
  params: Any
  opt_state: Any
  ema: Any  # exponential moving average of params
  rng: jax.Array  # raw uint32[2] key; step keys are fold_in(rng, step)


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def flat_shapes(tree) -> dict[str, tuple]:
  """'a/b/0/w' -> shape, for trees of shapes (tuples) or arrays."""
  is_shape = lambda x: isinstance(x, tuple) and all(isinstance(d, int) for d in x)  # noqa: E731
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_shape)[0]
  return {_path_str(p): tuple(x) if is_shape(x) else tuple(x.shape) for p, x in leaves}


def param_logical_names(abstract_model: nnx.Module) -> dict:
  """Pure dict: parameter path -> tuple of logical axis names."""
  _, state = nnx.split(abstract_model)
  specs = nnx.to_pure_dict(nnx.get_partition_spec(state))
  return jax.tree.map(tuple, specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def param_shardings(abstract_params: dict, names: dict, mesh, rules) -> dict:
  """NamedShardings for parameters; checks that every sharded dimension divides evenly."""

  def one(path, leaf, logical):
    spec = sharding.logical_spec(logical, rules)
    for dim, (size, axes) in enumerate(zip(leaf.shape, tuple(spec) + (None,) * leaf.ndim)):
      axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
      ways = math.prod(mesh.shape[a] for a in axes)
      if size % ways:
        raise DlmError(
            f"parameter {_path_str(path)} has dimension {dim} of size {size} ({logical[dim]}), "
            f"which mesh axes {axes} ({ways} ways) cannot split; change mesh.shape or the model"
        )
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(
      one, abstract_params, names, is_leaf=lambda x: isinstance(x, tuple))


def state_shardings(abstract_state: TrainState, p_shardings: dict, tx, mesh) -> TrainState:
  replicated = NamedSharding(mesh, PartitionSpec())
  masked = optax.transforms.MaskedNode  # a frozen parameter's place (no moments)
  opt = optax.tree_map_params(
      tx, lambda x, s: x if isinstance(x, masked) else s, abstract_state.opt_state, p_shardings,
      transform_non_params=lambda _: replicated,
      is_leaf=lambda x: isinstance(x, (NamedSharding, masked)))
  return TrainState(step=replicated, params=p_shardings, opt_state=opt, ema=p_shardings,
                    rng=replicated)


def _initializer(model_fn, tx, seed: int):
  def init() -> TrainState:
    params = nnx.to_pure_dict(nnx.split(model_fn(nnx.Rngs(seed)))[1])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      ema=jax.tree.map(jnp.copy, params),
                      rng=jax.random.PRNGKey(seed + 1))

  return init


def create_abstract(model_fn: Callable[[nnx.Rngs], nnx.Module], tx, mesh, rules, seed: int):
  """(graphdef, abstract state, shardings) without allocating anything."""
  abstract_model = nnx.eval_shape(lambda: model_fn(nnx.Rngs(seed)))
  graphdef, _ = nnx.split(abstract_model)
  names = param_logical_names(abstract_model)
  abstract_state = jax.eval_shape(_initializer(model_fn, tx, seed))
  p_shardings = param_shardings(abstract_state.params, names, mesh, rules)
  return graphdef, abstract_state, state_shardings(abstract_state, p_shardings, tx, mesh)


def create(model_fn: Callable[[nnx.Rngs], nnx.Module], tx, mesh, rules, seed: int):
  """(graphdef, state, shardings): the state initialised in place on the mesh."""
  graphdef, _, shardings = create_abstract(model_fn, tx, mesh, rules, seed)
  with jax.set_mesh(mesh):
    state = jax.jit(_initializer(model_fn, tx, seed), out_shardings=shardings)()
  return graphdef, state, shardings


def abstract(state_or_shapes: TrainState, shardings: TrainState) -> TrainState:
  """ShapeDtypeStructs carrying the target shardings (what a restore fills in)."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state_or_shapes, shardings)


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
