"""Helpers for tests of families with a frozen encoder: random "pretrained" weights, and a few
Adam steps on one batch with the frozen variables held out of the optimizer."""

import jax
import optax
from flax import nnx


def randomize_encoder(encoder, seed: int, scale: float) -> None:
  """Normal(0, scale) weights in place, so that the encoder's states depend on the tokens."""
  state = nnx.state(encoder)
  leaves = jax.tree.leaves(state)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  nnx.update(encoder, jax.tree.unflatten(
      jax.tree.structure(state), [jax.random.normal(k, x.shape) * scale
                                  for k, x in zip(keys, leaves)]))


def fit(model, batch, steps: int, lr: float = 3e-3):
  """`steps` Adam steps of `model.loss(model.corrupt(batch))` per token on `nnx.Param`s only
  (what an optimizer sees). Returns (trained model, losses, last metrics, trained params)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adam(lr)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, rng):
    def loss_fn(p):
      m = nnx.merge(graphdef, p, rest)
      total, metrics = m.loss(m.corrupt(batch, rng), rng=rng, train=True)
      return total / metrics["tokens"], metrics
    (loss, metrics), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(g, opt)
    return optax.apply_updates(params, updates), opt, loss, metrics

  losses, metrics = [], None
  for i in range(steps):
    params, opt, loss, metrics = step(params, opt, jax.random.PRNGKey(i))
    losses.append(float(loss))
  return nnx.merge(graphdef, params, rest), losses, metrics, params
