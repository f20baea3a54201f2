"""Conditional log-likelihoods log p(continuation | context): what lm-evaluation-harness asks a
model for (`loglikelihood`), for the families that define one.

* `autoregressive`: exact, sum_i log p(y_i | x, y_<i) in one causal pass.
* `masked`: the masked-diffusion ELBO (a lower bound on log p(y | x)) estimated by Monte Carlo
  as LLaDA's `eval_llada.py::get_log_likelihood` does: each sample masks l ~ U{1..L} of the L
  continuation tokens (a uniformly random subset; the context stays given) and scores
  (L / l) sum_{i masked} log p(y_i | x, y_unmasked) (LLaDA, Nie et al. 2025, the l-form of the
  bound; for a time-blind network it is the continuous-time NELBO of any schedule). The l of
  the samples in one group (min(samples, batch_size) of them) are stratified as LLaDA's
  batch (`_forward_process`: one uniform k, then k, k + L/n, ... wrapped into 1..L), so each
  is still uniform and the mean is unbiased.
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
from tqdm import tqdm

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


def masked_terms(denoise, tokens, continuation, mask_id: int, counts, rngs) -> jax.Array:
  """Per row (batch,): (L / l) sum over the l masked continuation positions of log p(y_i | the
  rest), the l = `counts` positions chosen uniformly with each row's own key (`rngs`, one per
  row); `denoise(z, t) -> logits`; `continuation` (batch, length) marks the L positions
  scored."""
  total = jnp.sum(continuation, axis=-1)
  draws = jax.vmap(lambda key: jax.random.uniform(key, tokens.shape[1:]))(rngs)
  u = jnp.where(continuation, draws, jnp.inf)
  rank = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1)
  masked = continuation & (rank < counts[:, None])
  z = jnp.where(masked, mask_id, tokens)
  t = jnp.where(continuation, (counts / total)[:, None], 0.0).astype(jnp.float32)
  logits = zero_masking(denoise(z, t), mask_id)
  log_p = (jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
           - jax.nn.logsumexp(logits, axis=-1))
  return total / counts * jnp.sum(jnp.where(masked, log_p, 0.0), axis=-1)


def group_draws(key, group: int, length):
  """One group's stratified counts (`group`,) over a continuation of `length` and its rows'
  mask keys (`group`, 2), from the group's key."""
  k_count, k_mask = jax.random.split(key)
  return stratified_counts(k_count, group, length), jax.random.split(k_mask, group)


def mc_estimate(terms, length: int, *, samples: int, batch_size: int, rng) -> tuple[float,
                                                                                      float]:
  """(mean, standard error) of `terms(counts, keys) -> (batch_size,)` (`masked_terms` of one
  row repeated) over `samples` draws in stratified groups of `batch_size`; the error is taken
  over the groups' means (independent draws; those within a group are not)."""
  calls = max(1, math.ceil(samples / batch_size))
  means = [float(jnp.mean(terms(*group_draws(jax.random.fold_in(rng, i), batch_size, length))))
           for i in range(calls)]
  return _mean_and_error(means)


def _mean_and_error(means) -> tuple[float, float]:
  n = len(means)
  stderr = float(np.std(means, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
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


@functools.partial(jax.jit, static_argnames=("graphdef", "mask_id", "group"))
def _masked(graphdef, params, tokens, real, scored, key, requests, draws, *, mask_id, group):
  """The mean term of one stratified group of `group` draws per item (items, width): item i
  is group `draws[i]` of request `requests[i]`, its counts and masks from
  fold_in(fold_in(key, request), group)."""
  keys = jax.vmap(lambda r, d: jax.random.fold_in(jax.random.fold_in(key, r), d))(requests,
                                                                                 draws)
  counts, row_keys = jax.vmap(lambda k, n: group_draws(k, group, n))(keys, scored.sum(-1))
  rows = lambda x: jnp.repeat(x, group, axis=0)  # noqa: E731
  terms = masked_terms(_masked_denoiser(graphdef, params, rows(real)), rows(tokens),
                       rows(scored), mask_id, counts.reshape(-1), row_keys.reshape(-1, 2))
  return terms.reshape(tokens.shape[0], group).mean(axis=-1)


@functools.partial(jax.jit, static_argnames=("graphdef", "mask_id"))
def _greedy(graphdef, params, tokens, real, scored, *, mask_id):
  """Whether one pass with the whole continuation masked gets every token right by argmax."""
  z = jnp.where(scored, mask_id, tokens)
  t = jnp.where(scored, 1.0, 0.0).astype(jnp.float32)
  logits = zero_masking(_masked_denoiser(graphdef, params, real)(z, t), mask_id)
  return jnp.all((jnp.argmax(logits, axis=-1) == tokens) | ~scored, axis=-1)


def _batches(widths, per_call: int):
  """Indices of the items, by width, in chunks of at most `per_call` (one shape per width)."""
  by_width: dict[int, list[int]] = {}
  for i, w in enumerate(widths):
    by_width.setdefault(w, []).append(i)
  for w in sorted(by_width):
    items = by_width[w]
    for start in range(0, len(items), per_call):
      yield items[start:start + per_call]


class Scorer:
  """Conditional log-likelihoods of one model (compiled once per model graph and padded
  length, shared by every Scorer of the same graph).

  `score_many([(context_ids, continuation_ids), ...])`: each context given, its continuation
  scored, requests batched together: `batch_size` rows per compiled call, rows of requests
  padded (segment 0, unseen by the real tokens) to the same multiple of `pad_multiple`. The
  masked family draws each request's `samples` in stratified groups of min(samples,
  batch_size), several requests' groups per call when they fit; a request's draws come from
  its own key (the seed and its index among the Scorer's requests), so its estimate does not
  depend on what it was batched with."""

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
    self._requests = 0

  def _canvas(self, context: Sequence[int], continuation: Sequence[int]):
    if not len(continuation):
      raise DlmError("an empty continuation has no likelihood to score")
    if self.family == "autoregressive" and not len(context):
      raise DlmError("the autoregressive family scores a continuation after at least one "
                     "context token (lm-eval passes its end-of-text token)")
    ids = list(context) + list(continuation)
    if self.max_length and len(ids) > self.max_length:  # keep the continuation, cut the context
      ids = ids[-self.max_length:]
    n = len(ids)
    width = -(-n // self.pad_multiple) * self.pad_multiple
    tokens = np.zeros(width, np.int32)
    tokens[:n] = ids
    real = np.arange(width) < n
    scored = real & (np.arange(width) >= n - min(len(continuation), n))
    return tokens, real, scored

  def _run(self, fn, canvases, per_call, progress: str | None):
    """fn(tokens, real, scored, indices) over every canvas, in chunks of `per_call` of one
    width, each chunk padded to `per_call` with copies of its first canvas; returns the
    outputs (one per canvas, in order)."""
    out = [None] * len(canvases)
    chunks = list(_batches([len(c[0]) for c in canvases], per_call))
    for chunk in tqdm(chunks, desc=progress, disable=progress is None or len(chunks) < 2):
      picked = chunk + [chunk[0]] * (per_call - len(chunk))
      arrays = [jnp.asarray(np.stack([canvases[i][k] for i in picked])) for k in range(3)]
      values = jax.device_get(fn(*arrays, np.asarray(picked, np.int32)))
      for row, j in enumerate(chunk):
        out[j] = jax.tree.map(lambda v: v[row], values)
    return out

  def score_many(self, requests: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                 progress: str | None = None) -> list[Likelihood]:
    """`Likelihood`s of (context_ids, continuation_ids) requests, in order; `progress`: a
    progress bar over the compiled calls with that description."""
    canvases = [self._canvas(c, y) for c, y in requests]
    first, self._requests = self._requests, self._requests + len(requests)
    if self.family == "autoregressive":
      scores = self._run(lambda t, r, s, _: _autoregressive(self.graphdef, self.params, t, r, s),
                         canvases, self.batch_size, progress)
      return [Likelihood(float(v), bool(g), 0.0) for v, g in scores]
    mask_id = self.model.process.mask_id
    group = min(self.samples, self.batch_size)
    groups = math.ceil(self.samples / group)
    key = jax.random.PRNGKey(self.seed)

    def masked(tokens, real, scored, items):  # item i: group i % groups of request i // groups
      return _masked(self.graphdef, self.params, tokens, real, scored, key,
                     first + items // groups, items % groups, mask_id=mask_id, group=group)

    by_item = [canvases[i // groups] for i in range(len(canvases) * groups)]
    means = self._run(masked, by_item, max(1, self.batch_size // group), progress)
    greedy = self._run(lambda t, r, s, _: _greedy(self.graphdef, self.params, t, r, s,
                                                  mask_id=mask_id),
                       canvases, self.batch_size, None)
    out = []
    for r in range(len(canvases)):
      value, stderr = _mean_and_error([float(m) for m in means[r * groups:(r + 1) * groups]])
      out.append(Likelihood(value, bool(greedy[r]), stderr))
    return out

  def score(self, context: Sequence[int], continuation: Sequence[int]) -> Likelihood:
    return self.score_many([(context, continuation)])[0]


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
