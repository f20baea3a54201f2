"""Conditional log-likelihoods log p(continuation | context): what lm-evaluation-harness asks a
model for (`loglikelihood`), for the families that define one.

* `autoregressive`: exact, sum_i log p(y_i | x, y_<i) in one causal pass.
* `masked`: the masked-diffusion ELBO (a lower bound on log p(y | x)) estimated by Monte Carlo
  as LLaDA's `eval_llada.py::get_log_likelihood` does: each sample masks l ~ U{1..L} of the L
  continuation tokens (a uniformly random subset; the context stays given) and scores
  (L / l) sum_{i masked} log p(y_i | x, y_unmasked) (LLaDA, Nie et al. 2025, the l-form of the
  bound; for a time-blind network it is the continuous-time NELBO of any schedule). The l of
  the samples in one batch are stratified as there (`_forward_process`: one uniform k, then
  k, k + L/n, ... wrapped into 1..L), so each is still uniform and the mean is unbiased.
  A time-conditioned network gets the masked fraction l / L as every continuation token's
  time (LLaDA's network has no time input). With exact conditionals of a joint the bound is
  tight: the estimate's mean is the true log p(y | x) (tests/test_likelihood.py enumerates it).

`is_greedy` (lm-eval's second value): whether greedy decoding gives the continuation; for the
masked family, one pass with the whole continuation masked, every argmax right (LLaDA's
`suffix_greedy_prediction` check, done in one step).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlm.errors import DlmError
from dlm.processes.categorical import zero_masking

FAMILIES = ("autoregressive", "masked")


class Likelihood(NamedTuple):
  value: float  # log p(continuation | context) in nats (masked: the ELBO's estimate)
  is_greedy: bool
  stderr: float  # standard error of a Monte Carlo estimate (0 when exact)


def stratified_counts(rng, n: int, length: int) -> jax.Array:
  """n masked counts in 1..length, each uniform, evenly spread from one uniform start k:
  k + round(j length / n), wrapped into 1..length (LLaDA's `_forward_process`, which rounds
  k + j length / n half to even instead: a row whose offset is a half-integer then depends on
  k's parity, and the estimate is biased, by about 0.01 nats on the test's toy joint)."""
  k = jax.random.randint(rng, (), 1, length + 1)
  offset = jnp.floor(jnp.arange(n) * (length / n) + 0.5).astype(jnp.int32)
  return (k + offset - 1) % length + 1


def masked_terms(denoise, tokens, continuation, mask_id: int, counts, rng) -> jax.Array:
  """Per row (batch,): (L / l) sum over the l masked continuation positions of log p(y_i | the
  rest), the l = `counts` positions chosen uniformly; `denoise(z, t) -> logits`;
  `continuation` (batch, length) marks the L positions scored."""
  total = jnp.sum(continuation, axis=-1)
  u = jnp.where(continuation, jax.random.uniform(rng, tokens.shape), jnp.inf)
  rank = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1)
  masked = continuation & (rank < counts[:, None])
  z = jnp.where(masked, mask_id, tokens)
  t = jnp.where(continuation, (counts / total)[:, None], 0.0).astype(jnp.float32)
  logits = zero_masking(denoise(z, t), mask_id)
  log_p = (jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
           - jax.nn.logsumexp(logits, axis=-1))
  return total / counts * jnp.sum(jnp.where(masked, log_p, 0.0), axis=-1)


def mc_estimate(terms, length: int, *, samples: int, batch_size: int, rng) -> tuple[float,
                                                                                      float]:
  """(mean, standard error) of `terms(counts, rng) -> (batch_size,)` (`masked_terms` of one
  row repeated) over `samples` draws in stratified batches; the error is taken over the
  batches' means (independent draws; those within a batch are not)."""
  calls = max(1, math.ceil(samples / batch_size))
  means = []
  for i in range(calls):
    k_count, k_mask = jax.random.split(jax.random.fold_in(rng, i))
    means.append(float(jnp.mean(terms(stratified_counts(k_count, batch_size, length),
                                      k_mask))))
  stderr = float(np.std(means, ddof=1) / math.sqrt(calls)) if calls > 1 else float("nan")
  return float(np.mean(means)), stderr


def _merged(graphdef, params, real):
  """The model, and its segment ids and positions for a padded canvas (padding: segment 0)."""
  return (nnx.merge(graphdef, params), real.astype(jnp.int32),
          jnp.broadcast_to(jnp.arange(real.shape[-1]), real.shape))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _autoregressive(graphdef, params, tokens, real, scored):
  """Per row: sum of log p(x_i | x_<i) over scored positions, and whether each was argmax."""
  model, segments, positions = _merged(graphdef, params, real)
  logits = model.denoise(tokens, segments, positions)[:, :-1]
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(log_p, tokens[:, 1:, None], axis=-1)[..., 0]
  hit = jnp.argmax(logits, axis=-1) == tokens[:, 1:]
  scored = scored[:, 1:]
  return jnp.sum(jnp.where(scored, picked, 0.0), axis=-1), jnp.all(hit | ~scored, axis=-1)


def _masked_denoiser(graphdef, params, real):
  model, segments, positions = _merged(graphdef, params, real)
  return lambda z, t: model.denoise(z, t, segments, positions)


@functools.partial(jax.jit, static_argnames=("graphdef", "mask_id"))
def _masked(graphdef, params, tokens, real, scored, counts, rng, *, mask_id):
  return masked_terms(_masked_denoiser(graphdef, params, real), tokens, scored, mask_id,
                      counts, rng)


@functools.partial(jax.jit, static_argnames=("graphdef", "mask_id"))
def _greedy(graphdef, params, tokens, real, scored, *, mask_id):
  """Whether one pass with the whole continuation masked gets every token right by argmax."""
  z = jnp.where(scored, mask_id, tokens)
  t = jnp.where(scored, 1.0, 0.0).astype(jnp.float32)
  logits = zero_masking(_masked_denoiser(graphdef, params, real)(z, t), mask_id)
  return jnp.all((jnp.argmax(logits, axis=-1) == tokens) | ~scored, axis=-1)


class Scorer:
  """Conditional log-likelihoods of one model (compiled once per model graph and padded
  length, shared by every Scorer of the same graph).

  `score(context_ids, continuation_ids)`: the context is given, the continuation scored; the
  canvas is padded (segment 0, unseen by the real tokens) to a multiple of `pad_multiple`."""

  def __init__(self, model, *, samples: int = 128, batch_size: int = 32, seed: int = 0,
               pad_multiple: int = 32, max_length: int = 0):
    if model.family not in FAMILIES:
      raise DlmError(f"no conditional likelihood for the {model.family!r} family; it is "
                     f"defined for {', '.join(FAMILIES)}")
    if samples <= 0 or batch_size <= 0:
      raise DlmError(f"samples and batch_size must be positive, got {samples}, {batch_size}")
    self.model, self.family = model, model.family
    self.samples, self.batch_size, self.seed = samples, batch_size, seed
    self.pad_multiple, self.max_length = pad_multiple, max_length
    self.graphdef, params = nnx.split(model)
    self.params = nnx.to_pure_dict(params)
    self._calls = 0

  def _canvas(self, context: Sequence[int], continuation: Sequence[int]):
    ids = list(context) + list(continuation)
    if self.max_length and len(ids) > self.max_length:  # keep the continuation, cut the context
      ids = ids[-self.max_length:]
    n = len(ids)
    width = -(-n // self.pad_multiple) * self.pad_multiple
    tokens = np.zeros((1, width), np.int32)
    tokens[0, :n] = ids
    real = np.arange(width)[None] < n
    scored = real & (np.arange(width)[None] >= n - len(continuation))
    return jnp.asarray(tokens), jnp.asarray(real), jnp.asarray(scored)

  def score(self, context: Sequence[int], continuation: Sequence[int]) -> Likelihood:
    if not len(continuation):
      raise DlmError("an empty continuation has no likelihood to score")
    if self.family == "autoregressive" and not len(context):
      raise DlmError("the autoregressive family scores a continuation after at least one "
                     "context token (lm-eval passes its end-of-text token)")
    tokens, real, scored = self._canvas(context, continuation)
    if self.family == "autoregressive":
      value, greedy = _autoregressive(self.graphdef, self.params, tokens, real, scored)
      return Likelihood(float(value[0]), bool(greedy[0]), 0.0)
    mask_id = self.model.process.mask_id
    rng = jax.random.fold_in(jax.random.PRNGKey(self.seed), self._calls)
    self._calls += 1
    batch = (jnp.repeat(tokens, self.batch_size, 0), jnp.repeat(real, self.batch_size, 0),
             jnp.repeat(scored, self.batch_size, 0))
    value, stderr = mc_estimate(
        lambda counts, key: _masked(self.graphdef, self.params, *batch, counts, key,
                                    mask_id=mask_id),
        len(continuation), samples=self.samples, batch_size=self.batch_size, rng=rng)
    greedy = _greedy(self.graphdef, self.params, tokens, real, scored, mask_id=mask_id)
    return Likelihood(value, bool(greedy[0]), stderr)


def loglikelihood(run, context: str | Sequence[int], continuation: str | Sequence[int],
                  **options) -> Likelihood:
  """log p(continuation | context) of a loaded run (`dlm.load`): texts are tokenized by the
  run's tokenizer (the context after its bos where the model was trained with one), ids are
  used as they are. `options`: `Scorer`'s (samples, batch_size, seed); calls on the same
  model compile once per padded length."""
  tok = run.tokenizer

  def ids(x):
    return tok.encode(x).tolist() if isinstance(x, str) else list(x)

  context_ids = ids(context)
  if run.config.data.add_bos or (run.family == "autoregressive" and not context_ids):
    context_ids = [tok.bos_id if run.config.data.add_bos else tok.eos_id] + context_ids
  return Scorer(run.model, **options).score(context_ids, ids(continuation))
