"""The one training loop, for every family: `train(config, workdir)`.

Resumes from the newest intact checkpoint in `workdir` if there is one (train state, EMA,
data position; damaged checkpoints are skipped and set aside), checkpoints every
`train.checkpoint_every` steps, evaluates every `train.eval_every` steps on the evaluation split
with the raw and the EMA parameters (after the checkpoint, so a failing evaluation loses
nothing), skips non-finite steps (stopping after `train.max_nonfinite_steps` in a row), and on
SIGTERM (preemption) or SIGINT (Ctrl-C) writes a checkpoint and returns cleanly. One training
run per workdir at a time (`dlm/train/workdir.py`).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from tqdm import tqdm

from dlm import config as config_lib
from dlm import distributed, models, registry, sharding
from dlm.data import inputs, sources
from dlm.errors import DlmError, one_line
from dlm.train import batches
from dlm.train import checkpoint as ckpt_lib
from dlm.train import micro_batches
from dlm.train import optimizer as optim
from dlm.train import pretrained
from dlm.train import restore
from dlm.train import state as state_lib
from dlm.train import step as step_lib
from dlm.train import workdir as workdir_lib
from dlm.train.metrics import MetricWriter


class _Interrupts:
  """SIGTERM (preemption) and SIGINT (Ctrl-C) become a flag the loop checks after each step:
  it writes a checkpoint and returns. A second Ctrl-C interrupts at once (the last checkpoint
  stays). Single-process runs in the main thread; with jax.distributed, Orbax's preemption
  sync point handles SIGTERM across hosts."""

  def __init__(self):
    self.requested = None  # the signal's name once one arrived
    self._previous = {}

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested:
      raise KeyboardInterrupt
    self.requested = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)


class _NonFinite:
  """Counts skipped (non-finite) steps without a device sync per step: a step's flag is read
  when the next step is already queued (`push`), or at once by `flush`. `stopped` holds the
  (first, last) steps of the first run of `limit` skipped steps in a row."""

  def __init__(self, limit: int):
    self.limit = limit
    self.pending = None
    self.run = 0  # consecutive skipped steps so far
    self.first = 0  # the first step of that run
    self.since_log = 0
    self.stopped: tuple[int, int] | None = None

  def push(self, step: int, flag) -> None:
    self.flush()
    self.pending = (step, flag)

  def flush(self) -> None:
    if self.pending is None:
      return
    step, flag = self.pending
    self.pending = None
    if not int(jax.device_get(flag)):
      self.run = 0
      return
    self.since_log += 1
    self.run += 1
    if self.run == 1:
      self.first = step
    if self.run == self.limit and self.stopped is None:
      self.stopped = (self.first, step)


# Keys that describe the network; resuming with any of them changed is refused. The others
# (dtype, remat, attention_impl, dropout, head_init_std) change how it runs or starts.
ARCHITECTURE_KEYS = ("family", "width", "depth", "heads", "mlp_ratio", "time_conditioning",
                     "cond_width", "attention", "block_size", "rope_theta", "tie_embeddings",
                     "scan_layers", "lora_rank", "lora_alpha")


def _check_compatible(ckpts, step, stored, config, tokenizer, abstract_params, workdir) -> None:
  for key in ARCHITECTURE_KEYS:
    saved, now = stored.model.get(key), config.model.get(key)
    if saved != now:
      raise DlmError(f"the checkpoint in {workdir!r} was trained with model.{key}={saved!r}, "
                     f"not {now!r}; use the checkpoint's value or a new workdir")
  saved_tok = ckpts.read_tokenizer(step, stored)
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

  def __init__(self, config, tokenizer, mesh, eval_fn, batches: int | None = None,
               progress: bool = False):
    """`batches`: how many evaluation batches (0 = the whole split; None = train.eval_batches);
    `progress`: progress bars on stderr (process 0) while reading and scoring them."""
    self.config, self.tokenizer, self.mesh, self.eval_fn = config, tokenizer, mesh, eval_fn
    self.progress = progress and jax.process_index() == 0
    self.limit = config.train.eval_batches if batches is None else batches
    self._batches = None
    self.unigram_bits = None
    self.real_tokens = None  # the real (non-padding) tokens read, given ones included

  def _load(self):
    """Reads the split once. With several processes, each reads its documents; those with
    fewer batches add empty ones (segment id 0: no tokens) so that all run the same number of
    eval steps, and the unigram counts are summed over processes."""
    it = inputs.eval_iterator(self.config, self.tokenizer, self.mesh)
    limit = self.limit or math.inf
    local_batches, counts = [], np.zeros(self.tokenizer.vocab_size, np.int64)
    bar = tqdm(desc="reading validation", unit="batch", total=self.limit or None,
               file=sys.stderr, disable=not self.progress)
    try:
      while len(local_batches) < limit:
        local = it.next_local()
        real = local["segment_ids"] > 0
        counts += np.bincount(local["tokens"][real], minlength=len(counts))
        local_batches.append(local)
        bar.update(1)
    except StopIteration:
      pass
    finally:
      bar.close()
      it.close()
    n = len(local_batches)
    if jax.process_count() > 1:
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
    self.real_tokens = int(counts.sum())

  def __call__(self, params) -> dict:
    if self._batches is None:
      self._load()
    rng = jax.random.PRNGKey(self.config.train.seed + 2)
    total = None
    for i, batch in enumerate(tqdm(self._batches, desc="validation", unit="batch",
                                   file=sys.stderr, disable=not self.progress)):
      m = self.eval_fn(params, batch, jax.random.fold_in(rng, i))
      total = m if total is None else jax.tree.map(lambda a, b: a + b, total, m)
    return {k: float(v) for k, v in step_lib.summarize(jax.device_get(total)).items()}


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _resume(ckpts, workdir, config, tokenizer, mesh, abstract_state, wanted: int | None):
  """(state, train batches) restored from the newest intact checkpoint, or from step `wanted`
  (whose newer checkpoints are then set aside); None for a new run. Damaged checkpoints are
  skipped, said so and moved to `WORKDIR/damaged_checkpoints`; an incompatible one (another
  model, tokenizer or data order) is an error."""
  steps = ckpts.all_steps()
  if not steps and wanted is None:
    return None

  def read(step):
    saved = ckpts.data_position(step)
    stored = ckpts.read_config(step)
    _check_compatible(ckpts, step, stored, config, tokenizer, abstract_state.params, workdir)
    train_it = batches.train_batches(config, tokenizer, mesh, saved)
    try:
      return saved, ckpts.restore(step, abstract_state, train_it), train_it
    except BaseException:
      train_it.close()
      raise

  step, (saved, state, train_it), damaged = ckpts.first_intact(
      read, wanted, hint=" (move them away to start over)")
  newer = [s for s in steps if s > step] if wanted is not None else []
  if jax.process_index() == 0:
    for e in damaged:
      where = ckpts.set_aside(e.step, "damaged")
      distributed.say(f"dlm: skipped the damaged checkpoint at step {e.step} ({e.item}: "
                      f"{e.reason}); moved to {where}")
    for s in newer:
      distributed.say(f"dlm: resuming from step {step}: the checkpoint at step {s} moved to "
                      f"{ckpts.set_aside(s, 'superseded')}")
  _sync("dlm-resume")
  if jax.process_index() != 0 and (damaged or newer):
    ckpts.manager.reload()
  train_it.batches = int(jax.device_get(state.step))  # one batch per step
  distributed.say(batches.describe_resume(saved, train_it))
  return state, train_it


def _check_splits(config) -> None:
  """Both splits exist and hold documents, the training split at least one per configured
  stream: found before anything is written, not at the first evaluation hundreds of steps
  later. (With `data.streams=0`, one stream per process, the pipeline names a process that
  gets no documents.)"""
  data = config.data
  if not data.eval_split:
    raise DlmError("data.eval_split is empty: there is no split to evaluate on")
  inputs.documents(data, data.eval_split)
  train_docs = inputs.documents(data, data.train_split)
  if not isinstance(train_docs, sources.Documents):  # streamed: a reader with none says so
    return
  if data.streams > len(train_docs):
    raise DlmError(f"data.streams={data.streams} needs at least as many training documents; "
                   f"the split holds {len(train_docs)}")


def train(config, workdir: str, step: int | None = None) -> dict:
  """Trains (or resumes) to `train.steps`; returns the last evaluation's metrics.

  Resumes from the newest intact checkpoint in `workdir` (damaged ones are set aside), or from
  `step` (newer checkpoints are then set aside). The workdir must be writable and is locked
  for the run's duration: a second run on it is refused."""
  config_lib.validate(config)
  if step is not None and step > config.train.steps:
    raise DlmError(f"--step={step} is past train.steps={config.train.steps}")
  if ckpt_lib.params_only(workdir):
    raise DlmError(f"{workdir!r} holds model parameters only (a converted model, no training "
                   "state): fine-tune it from a new workdir with "
                   f"--config.train.init_from={workdir}")
  workdir_lib.prepare(workdir)
  with workdir_lib.lock(workdir):
    return _train(config, workdir, step)


def _train(config, workdir: str, wanted: int | None) -> dict:
  training = config.train
  mesh = sharding.make_mesh(config.mesh.shape)
  rules = config.mesh.rules
  _check_splits(config)
  family = registry.get(config.model.family)
  if family.resolve is not None:  # settings adopted from other workdirs, before building
    family.resolve(config, restore.read_config)
  tokenizer = pretrained.tokenizer(config) or inputs.load_tokenizer(config.data)
  model_fn = lambda rngs: models.build(config, tokenizer, rngs)  # noqa: E731
  abstract_model = nnx.eval_shape(lambda: model_fn(nnx.Rngs(training.seed)))
  frozen = pretrained.frozen_mask(abstract_model, nnx.to_pure_dict(nnx.state(abstract_model)),
                                  training.freeze)
  tx, lr_schedule = optim.optimizer(training, frozen)
  ckpts = ckpt_lib.Checkpoints(workdir, keep=training.keep_checkpoints,
                               async_save=training.async_checkpoint)
  graphdef, abstract_state, shardings = state_lib.create_abstract(
      model_fn, tx, mesh, rules, training.seed)
  resumed = _resume(ckpts, workdir, config, tokenizer, mesh,
                    state_lib.abstract(abstract_state, shardings), wanted)
  if resumed is not None:
    state, train_it = resumed
  else:
    train_it = batches.train_batches(config, tokenizer, mesh, None)
    graphdef, state, shardings = state_lib.create(model_fn, tx, mesh, rules, training.seed)
    loaded = pretrained.values(abstract_model, config, tokenizer)
    state = state.replace(params=pretrained.fill(state.params, loaded, shardings.params),
                          ema=pretrained.fill(state.ema, loaded, shardings.ema))
  start = int(jax.device_get(state.step))
  closers = [ckpts.close, train_it.close]
  try:
    if start > training.steps:
      raise DlmError(f"the checkpoint in {workdir!r} is at step {start}, past train.steps="
                     f"{training.steps}: raise train.steps to continue, or resume from an earlier "
                     "checkpoint with --step")
    writer = MetricWriter(workdir, resume_step=start)
    closers.insert(0, writer.close)
    return _run(config, workdir, mesh, tokenizer, graphdef, tx, lr_schedule, shardings, frozen,
                state, train_it, ckpts, writer, start)
  except BaseException as e:
    _close(closers, failing=e)
    raise
  finally:
    _close(closers, failing=None)


def _close(closers: list, failing: BaseException | None) -> None:
  """Runs each closer once; while an error is already on its way out, a second one (e.g. the
  same full disk, again) does not replace it."""
  while closers:
    fn = closers.pop(0)
    try:
      fn()
    except Exception:  # pylint: disable=broad-except
      if failing is None:
        _close(closers, failing=None)
        raise


def _run(config, workdir, mesh, tokenizer, graphdef, tx, lr_schedule, shardings, frozen, state,
         train_it, ckpts, writer, start) -> dict:
  training = config.train
  def make_step(accum=None):
    return step_lib.make_train_step(graphdef, tx, lr_schedule, training, shardings,
                                    train_it.sharding, frozen, accum)

  step_fn = (micro_batches.AutoStep(make_step, train_it.sharding, jax.process_index() == 0)
             if micro_batches.is_automatic(training) else make_step())
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
  if training.progress and jax.process_index() == 0 and start < training.steps:
    progress = tqdm(total=training.steps, initial=start, file=sys.stderr, dynamic_ncols=True,
                    mininterval=1.0)
  last_eval: dict = {}
  saved_at = start if start else None  # the step of the newest checkpoint

  def save():
    nonlocal saved_at
    if saved_at != step:
      ckpts.save(state, train_it, config, tokenizer)
      saved_at = step

  def evaluate():
    try:
      raw = evaluator(state.params)
      ema = evaluator(state.ema)
    except Exception as e:  # pylint: disable=broad-except  (never lose the training)
      save()
      ckpts.wait()
      what = str(e) if isinstance(e, DlmError) else one_line(e)
      raise DlmError(f"evaluation at step {step} failed ({what}); the checkpoint at step "
                     f"{step} is saved") from e
    out = {f"eval/{k}": v for k, v in raw.items() if k != "tokens"}
    out.update({f"eval/ema_{k}": v for k, v in ema.items() if k != "tokens"})
    out["eval/tokens"] = raw["tokens"]  # scored; of eval/real_tokens (see dlm.evaluate)
    out["eval/real_tokens"] = evaluator.real_tokens
    out["eval/unigram_bits_per_token"] = evaluator.unigram_bits
    writer.write(step, out)
    return out

  step = start
  nonfinite = _NonFinite(training.max_nonfinite_steps)
  tokens_since, time_since = 0, time.perf_counter()
  try:
    with jax.set_mesh(mesh), _Interrupts() as interrupts:
      while step < training.steps:
        batch = next(train_it)
        state, metrics = step_fn(state, batch)
        step += 1
        nonfinite.push(step, metrics.pop("skipped"))
        if progress is not None:
          progress.update(1)
        tokens_since += training.batch_size * config.data.seq_len
        if step % training.log_every == 0 or step == training.steps:
          nonfinite.flush()
          metrics = jax.device_get(metrics)
          elapsed = time.perf_counter() - time_since
          out = {f"train/{k}": v for k, v in metrics.items()}
          out["train/tokens_per_s"] = tokens_since / elapsed
          out["train/skipped_steps"] = nonfinite.since_log
          nonfinite.since_log = 0
          writer.write(step, out)
          if progress is not None:
            progress.set_postfix(loss=f"{float(metrics['loss']):.3f}",
                                 tok_s=f"{tokens_since / elapsed:.0f}")
          tokens_since, time_since = 0, time.perf_counter()
        if nonfinite.stopped:  # seen one step late, or at once at a log step or the last
          first, last = nonfinite.stopped
          save()
          ckpts.wait()
          raise DlmError(
              f"{training.max_nonfinite_steps} consecutive training steps ({first}-{last}) had "
              "a non-finite loss, gradient or update and were skipped (the parameters did not "
              f"change over them; checkpoint written at step {step}): lower train.lr, set "
              "train.grad_clip, or resume an earlier checkpoint with --step")
        interrupted = interrupts.requested or (
            "SIGTERM" if ckpts.manager.reached_preemption(step) else None)
        if step % training.checkpoint_every == 0 or step == training.steps or interrupted:
          save()
        if interrupted:
          what = "preempted" if interrupted == "SIGTERM" else f"interrupted ({interrupted})"
          distributed.say(f"dlm: {what} at step {step}; checkpoint written")
          break
        if step % training.eval_every == 0 or step == training.steps:
          last_eval = evaluate()
          time_since = time.perf_counter()
  finally:
    if progress is not None:
      progress.close()
  if not last_eval and step >= training.steps:  # a finished run, run again: its logged evaluation
    last_eval = writer.find(step, "eval/")
    if last_eval is None:
      with jax.set_mesh(mesh):
        last_eval = evaluate()
  return {"step": step, **last_eval}
