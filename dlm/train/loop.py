"""The one training loop, for every family: `train(config, workdir)`.

Resumes from the latest checkpoint in `workdir` if there is one (train state, EMA, data
position), evaluates every `train.eval_every` steps on the evaluation split with the raw and the
EMA parameters, checkpoints every `train.checkpoint_every` steps, and on SIGTERM (preemption)
writes a checkpoint and returns cleanly.
"""

from __future__ import annotations

import math
import signal
import sys
import time

import jax
import numpy as np
from flax import nnx

from dlm import config as config_lib
from dlm import models, sharding
from dlm.data import inputs
from dlm.errors import DlmError
from dlm.train import batches
from dlm.train import checkpoint as ckpt_lib
from dlm.train import optimizer as optim
from dlm.train import pretrained
from dlm.train import state as state_lib
from dlm.train import step as step_lib
from dlm.train.metrics import MetricWriter


class _Preemption:
  """Turns SIGTERM into a flag the loop checks after each step (single-process runs; with
  jax.distributed, Orbax's preemption sync point does this across hosts)."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _check_compatible(ckpts, step, tokenizer, abstract_params, workdir) -> None:
  saved_tok = ckpts.read_tokenizer(step, ckpts.read_config(step))
  if saved_tok.fingerprint != tokenizer.fingerprint:
    raise DlmError(
        f"the checkpoint in {workdir!r} was trained with another tokenizer "
        f"(vocabulary {saved_tok.vocab_size}, now {tokenizer.vocab_size}); use a new workdir")
  saved = ckpts.param_shapes(step)
  now = jax.tree.map(lambda x: tuple(x.shape), abstract_params)
  flat_saved, flat_now = state_lib.flat_shapes(saved), state_lib.flat_shapes(now)
  if flat_saved != flat_now:
    diffs = []
    for path in sorted(set(flat_saved) | set(flat_now)):
      a, b = flat_saved.get(path), flat_now.get(path)
      if a != b:
        described = (f"{path}: checkpoint {a or 'lacks it'}, config {b or 'lacks it'}")
        diffs.append((a is None or b is None, described))
    diffs = [d for _, d in sorted(diffs)]
    raise DlmError(
        f"the checkpoint in {workdir!r} belongs to another model shape ({len(diffs)} "
        f"parameters differ, e.g. {diffs[0]}); use a new workdir or the checkpoint's config")


class Evaluator:
  """One pass over the evaluation split (batches cached after the first), fixed noise."""

  def __init__(self, config, tokenizer, mesh, eval_fn):
    self.config, self.tokenizer, self.mesh, self.eval_fn = config, tokenizer, mesh, eval_fn
    self._batches = None
    self.unigram_bits = None

  def _load(self):
    """Reads the split once. With several processes, each reads its documents; those with
    fewer batches add empty ones (segment id 0: no tokens) so that all run the same number of
    eval steps, and the unigram counts are summed over processes."""
    it = inputs.eval_iterator(self.config, self.tokenizer, self.mesh)
    limit = self.config.train.eval_batches or math.inf
    local_batches, counts = [], np.zeros(self.tokenizer.vocab_size, np.int64)
    try:
      while len(local_batches) < limit:
        local = it.next_local()
        real = local["segment_ids"] > 0
        counts += np.bincount(local["tokens"][real], minlength=len(counts))
        local_batches.append(local)
    except StopIteration:
      pass
    finally:
      it.close()
    n = len(local_batches)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      n = int(np.max(multihost_utils.process_allgather(np.int32(n))))
      high, low = (np.asarray(multihost_utils.process_allgather(part)).sum(axis=0)
                   for part in ((counts >> 30).astype(np.int32),
                                (counts & (2**30 - 1)).astype(np.int32)))
      counts = (high.astype(np.int64) << 30) + low  # exact int64 sums (no x64 in jax)
    if not n:
      raise DlmError(f"empty dataset: evaluation split {self.config.data.eval_split!r} "
                     "gives no batches")
    rows = self.config.train.batch_size // jax.process_count()
    empty = {"tokens": np.full((rows, self.config.data.seq_len), self.tokenizer.pad_id,
                               np.int32)}
    empty.update(segment_ids=np.zeros_like(empty["tokens"]),
                 positions=np.zeros_like(empty["tokens"]),
                 given=np.zeros(empty["tokens"].shape, bool))
    first = (local_batches or [empty])[0]  # features beyond `empty`'s (e.g. an 'order'): -1
    local_batches += [{k: empty[k] if k in empty else np.full_like(first[k], -1)
                       for k in first}] * (
        n - len(local_batches))
    self._batches = [{k: jax.make_array_from_process_local_data(it.sharding, v)
                      for k, v in local.items()} for local in local_batches]
    p = counts[counts > 0] / counts.sum()
    self.unigram_bits = float(-(p * np.log2(p)).sum())

  def __call__(self, params) -> dict:
    if self._batches is None:
      self._load()
    rng = jax.random.PRNGKey(self.config.train.seed + 2)
    total = None
    for i, batch in enumerate(self._batches):
      m = self.eval_fn(params, batch, jax.random.fold_in(rng, i))
      total = m if total is None else jax.tree.map(lambda a, b: a + b, total, m)
    return {k: float(v) for k, v in step_lib.summarize(jax.device_get(total)).items()}


def train(config, workdir: str) -> dict:
  """Trains (or resumes) to `train.steps`; returns the last evaluation's metrics."""
  config_lib.validate(config)
  t = config.train
  mesh = sharding.make_mesh(config.mesh.shape)
  rules = config.mesh.rules
  ckpts = ckpt_lib.Checkpoints(workdir, keep=t.keep_checkpoints, async_save=t.async_checkpoint)
  latest = ckpts.latest_step()
  tokenizer = pretrained.tokenizer(config) or inputs.load_tokenizer(config.data)
  model_fn = lambda rngs: models.build(config, tokenizer, rngs)  # noqa: E731
  abstract_model = nnx.eval_shape(lambda: model_fn(nnx.Rngs(t.seed)))
  frozen = pretrained.frozen_mask(abstract_model, nnx.to_pure_dict(nnx.state(abstract_model)),
                                  t.freeze)
  tx, lr_schedule = optim.optimizer(t, frozen)
  saved = ckpts.data_position(latest) if latest is not None else None
  train_it = batches.train_batches(config, tokenizer, mesh, saved)
  if latest is not None:
    graphdef, abstract_state, shardings = state_lib.create_abstract(
        model_fn, tx, mesh, rules, t.seed)
    _check_compatible(ckpts, latest, tokenizer, abstract_state.params, workdir)
    state = ckpts.restore(latest, state_lib.abstract(abstract_state, shardings), train_it)
    train_it.batches = int(jax.device_get(state.step))  # one batch per step
    if saved is not None and jax.process_index() == 0:
      print(batches.describe_resume(saved, train_it), file=sys.stderr)
  else:
    graphdef, state, shardings = state_lib.create(model_fn, tx, mesh, rules, t.seed)
    loaded = pretrained.values(abstract_model, config, tokenizer)
    state = state.replace(params=pretrained.fill(state.params, loaded, shardings.params),
                          ema=pretrained.fill(state.ema, loaded, shardings.ema))
  start = int(jax.device_get(state.step))
  writer = MetricWriter(workdir, resume_step=start)
  step_fn = step_lib.make_train_step(graphdef, tx, lr_schedule, t, shardings, train_it.sharding,
                                     frozen)
  evaluator = Evaluator(config, tokenizer, mesh,
                        step_lib.make_eval_step(graphdef, shardings.params, train_it.sharding))
  if jax.process_index() == 0:
    n = state_lib.count_params(state.params)
    n_frozen = sum(int(x.size) for x, f in zip(jax.tree.leaves(state.params),
                                               jax.tree.leaves(frozen)) if f)
    frozen_note = f" ({n_frozen / 1e6:.2f}M frozen)" if n_frozen else ""
    print(f"dlm: {config.model.family} model, {n / 1e6:.2f}M parameters{frozen_note}, mesh "
          f"{dict(mesh.shape)}, {'resuming at step ' + str(start) if start else 'from scratch'}",
          file=sys.stderr)
  progress = None
  if t.progress and jax.process_index() == 0:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    progress = tqdm(total=t.steps, initial=start, file=sys.stderr, dynamic_ncols=True,
                    mininterval=1.0)
  last_eval: dict = {}

  def evaluate(step):
    raw = evaluator(state.params)
    ema = evaluator(state.ema)
    out = {f"eval/{k}": v for k, v in raw.items() if k != "tokens"}
    out.update({f"eval/ema_{k}": v for k, v in ema.items() if k != "tokens"})
    out["eval/tokens"] = raw["tokens"]
    out["eval/unigram_bits_per_token"] = evaluator.unigram_bits
    writer.write(step, out)
    return out

  step = start
  tokens_since, time_since = 0, time.perf_counter()
  try:
    with jax.set_mesh(mesh), _Preemption() as preemption:
      while step < t.steps:
        batch = next(train_it)
        state, metrics = step_fn(state, batch)
        step += 1
        if progress is not None:
          progress.update(1)
        tokens_since += config.train.batch_size * config.data.seq_len
        if step % t.log_every == 0 or step == t.steps:
          metrics = jax.device_get(metrics)
          elapsed = time.perf_counter() - time_since
          out = {f"train/{k}": v for k, v in metrics.items()}
          out["train/tokens_per_s"] = tokens_since / elapsed
          writer.write(step, out)
          if progress is not None:
            progress.set_postfix(loss=f"{float(metrics['loss']):.3f}",
                                 tok_s=f"{tokens_since / elapsed:.0f}")
          tokens_since, time_since = 0, time.perf_counter()
        if step % t.eval_every == 0 or step == t.steps:
          last_eval = evaluate(step)
          time_since = time.perf_counter()
        preempted = preemption.requested or ckpts.manager.reached_preemption(step)
        if step % t.checkpoint_every == 0 or step == t.steps or preempted:
          ckpts.save(state, train_it, config, tokenizer)
        if preempted:
          print(f"dlm: preempted at step {step}; checkpoint written", file=sys.stderr)
          break
  finally:
    ckpts.close()
    writer.close()
    train_it.close()
    if progress is not None:
      progress.close()
  if not last_eval and step >= t.steps:
    with jax.set_mesh(mesh):
      last_eval = evaluate(step)
  return {"step": step, **last_eval}


def read_config(workdir: str, step: int | None = None):
  """The config stored with a workdir's checkpoint (the latest unless `step`)."""
  ckpts = ckpt_lib.Checkpoints(workdir, read_only=True, async_save=False)
  steps = ckpts.manager.all_steps()
  if not steps:
    raise DlmError(f"no checkpoint in {workdir!r}")
  config = ckpts.read_config(max(steps) if step is None else step)
  ckpts.close()
  return config


def restore_for_sampling(workdir: str, which: str = "ema", step: int | None = None, mesh=None):
  """(config, tokenizer, model, step) from a workdir's checkpoint (the latest unless `step`):
  nothing else is needed. The parameters are placed on `mesh` (default: all devices)."""
  if which not in ("ema", "params"):
    raise DlmError(f"which parameters: 'ema' or 'params', got {which!r}")
  ckpts = ckpt_lib.Checkpoints(workdir, read_only=True, async_save=False)
  steps = ckpts.manager.all_steps()
  if not steps:
    raise DlmError(f"no checkpoint in {workdir!r}")
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise DlmError(f"no checkpoint at step {step} in {workdir!r} (steps: {sorted(steps)})")
  config = ckpts.read_config(step)
  tokenizer = ckpts.read_tokenizer(step, config)
  mesh = mesh or sharding.make_mesh((-1, 1, 1))
  model_fn = lambda rngs: models.build(config, tokenizer, rngs)  # noqa: E731
  tx, _ = optim.optimizer(config.train)
  graphdef, abstract_state, shardings = state_lib.create_abstract(
      model_fn, tx, mesh, config.mesh.rules, config.train.seed)
  params = ckpts.restore_params(
      step, state_lib.abstract(abstract_state.params, shardings.params), which)
  ckpts.close()
  return config, tokenizer, nnx.merge(graphdef, params), step
