"""Training batches whose order does not depend on the number of processes.

The training order is cut into `S` *streams* (`data.streams`; 0 = the number of processes
when the run first starts, then whatever its checkpoints record). Stream `s` is the input
pipeline over documents `s, s + S, ...` (`pipeline.dataset(process_index=s, process_count=S)`,
shuffled with `data.seed`) and fills rows `s * B/S .. (s + 1) * B/S - 1` of every global batch
of `B` rows. With one stream per process, as by default, process `p` runs stream `p`: exactly
the per-process data shards of `dlm.data.pipeline`.

Each process runs the streams that hold the rows its devices keep (read from the batch
sharding) and builds its part of the global `jax.Array` from them. So a run saved by 2
processes and resumed by 1 (or 4, or 8) sees the same batches it would have seen without the
change: one process runs both streams; with more processes than streams, the processes that
share a stream each run it and keep their rows. A stream's position (grain iterator state) is
saved by the lowest-numbered process that runs it, as `stream_<s>-of-<S>.json`, so any later
process count finds every stream it needs (`checkpoint.DataHandler`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import grain
import jax
import numpy as np

from dlm import sharding
from dlm.data import inputs, pipeline
from dlm.errors import DlmError


@dataclasses.dataclass(frozen=True)
class SavedPosition:
  """What a checkpoint records about the data order (`checkpoint.Checkpoints.data_position`)."""
  streams: int
  process_count: int  # processes of the run that saved it
  batches: int | None  # batches drawn so far (None in checkpoints from before streams)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Which streams this process runs (`local`) and which positions it saves (`owned`)."""
  streams: int
  rows_per_stream: int
  local: tuple[int, ...]
  owned: tuple[int, ...]


def resolve_streams(configured: int, saved: SavedPosition | None, process_count: int) -> int:
  """The run's stream count: the checkpoint's if resuming, else `data.streams` (0 = one per
  process)."""
  if not isinstance(configured, int) or configured < 0:
    raise DlmError(f"data.streams must be a non-negative integer, got {configured!r}")
  if saved is not None:
    if configured and configured != saved.streams:
      raise DlmError(
          f"the checkpoint's data order has {saved.streams} streams but data.streams="
          f"{configured}; leave data.streams=0 to continue it, or use a new workdir")
    return saved.streams
  return configured or process_count


def rows_by_process(batch_sharding: jax.sharding.Sharding, shape: tuple[int, ...]
                    ) -> dict[int, set]:
  """Global batch rows that each process's devices hold (all processes, from the sharding of
  a batch of `shape`)."""
  out: dict[int, set] = {}
  for device, index in batch_sharding.devices_indices_map(shape).items():
    out.setdefault(device.process_index, set()).update(range(shape[0])[index[0]])
  return out


def plan(streams: int, batch_size: int, rows_of: Mapping[int, set],
         process_index: int) -> Plan:
  """The streams a process runs and saves, given which rows every process holds."""
  if streams <= 0 or batch_size % streams:
    raise DlmError(f"train.batch_size={batch_size} cannot be split into {streams} data streams "
                   "(data.streams, or the process count that started the run)")
  per = batch_size // streams
  runners: dict[int, set] = {}
  for p, rows in rows_of.items():
    for r in rows:
      runners.setdefault(r // per, set()).add(p)
  local = tuple(sorted(s for s, ps in runners.items() if process_index in ps))
  owned = tuple(s for s in local if min(runners[s]) == process_index)
  return Plan(streams, per, local, owned)


class TrainBatches:
  """Endless global training batches (dicts of `jax.Array`s on `sharding`) from the streams
  of `plan`; `make_stream(s)` builds stream `s`'s grain dataset (batches of
  `plan.rows_per_stream` rows)."""

  def __init__(self, make_stream: Callable[[int], grain.IterDataset], plan_: Plan,
               batch_sharding: jax.sharding.NamedSharding):
    self.plan = plan_
    self.sharding = batch_sharding
    self.batch_size = plan_.streams * plan_.rows_per_stream
    self.batches = 0  # drawn so far: the position in the global order
    self._its = {s: iter(make_stream(s)) for s in plan_.local}
    per = plan_.rows_per_stream
    self._row_map = np.full((self.batch_size,), -1, np.int64)  # global row -> local row
    for i, s in enumerate(plan_.local):
      self._row_map[s * per:(s + 1) * per] = np.arange(i * per, (i + 1) * per)

  def __iter__(self):
    return self

  def next_local(self) -> dict[str, np.ndarray]:
    """This process's streams' rows of the next batch (stream order), as numpy."""
    parts = [next(self._its[s]) for s in self.plan.local]
    self.batches += 1
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def __next__(self) -> dict[str, jax.Array]:
    local = self.next_local()
    return {k: self._global(v) for k, v in local.items()}

  def _global(self, local: np.ndarray) -> jax.Array:
    def rows(index):
      picked = self._row_map[np.arange(self.batch_size)[index[0]]]
      assert (picked >= 0).all(), "a device's rows come from a stream this process does not run"
      return local[picked][(slice(None),) + tuple(index[1:])]

    shape = (self.batch_size,) + local.shape[1:]
    return jax.make_array_from_callback(shape, self.sharding, rows)

  def stream_states(self) -> dict[int, Any]:
    """The positions this process saves: its owned streams' grain iterator states."""
    return {s: self._its[s].get_state() for s in self.plan.owned}

  def set_stream_states(self, states: Mapping[int, Any], batches: int) -> None:
    missing = [s for s in self.plan.local if s not in states]
    if missing:
      raise DlmError(f"the checkpoint lacks the data position of streams {missing}")
    for s in self.plan.local:
      self._its[s].set_state(states[s])
      start = getattr(self._its[s], "start_prefetch", None)
      if start is not None:  # as grain's own handler does: prefetch while the state restores
        start()
    self.batches = batches

  def close(self) -> None:
    """Stops background prefetching (call before exit)."""
    for it in self._its.values():
      close = getattr(it, "close", None)
      if close is not None:
        close()
    self._its = {}


def train_batches(config, tokenizer, mesh, saved: SavedPosition | None = None) -> TrainBatches:
  """The run's training batches on `mesh`; `saved` (a checkpoint's data position) fixes the
  stream count when resuming."""
  b = config.train.batch_size
  ways = sharding.batch_axes_size(mesh, config.mesh.rules)
  if b % ways:
    raise DlmError(f"train.batch_size={b} cannot be split over the mesh's batch axes "
                   f"({ways} ways)")
  streams = resolve_streams(config.data.streams, saved, jax.process_count())
  batch_sharding = pipeline.batch_sharding(mesh, config.mesh.rules)
  plan_ = plan(streams, b, rows_by_process(batch_sharding, (b, config.data.seq_len)),
               jax.process_index())
  docs = inputs.documents(config.data, config.data.train_split)

  def make_stream(s: int) -> grain.IterDataset:
    return inputs.dataset(config, tokenizer, docs, train=True, batch_size=plan_.rows_per_stream,
                          process_index=s, process_count=streams)

  return TrainBatches(make_stream, plan_, batch_sharding)


def first_rows(config, tokenizer, rows: int, what: str) -> list[dict]:
  """The first `rows` training rows or more (whole local batches of numpy arrays, read on one
  device), for statistics fitted when a run starts (a PCA, per-channel standardisation). Every
  process reads the same rows (all streams), so all fit the same statistics."""
  it = train_batches(config, tokenizer, sharding.make_mesh((1, 1, 1), jax.local_devices()[:1]))
  out, seen = [], 0
  try:
    while seen < rows:
      out.append(it.next_local())
      seen += len(out[-1]["tokens"])
  except StopIteration:
    pass
  finally:
    it.close()
  if not out:
    raise DlmError(f"empty dataset: no training rows for {what}")
  return out


def describe_resume(saved: SavedPosition, batches: TrainBatches) -> str:
  """One log line on how a resumed run continues the data order."""
  streams = _count(batches.plan.streams, "stream", "streams")
  where = f"at batch {batches.batches} (example {batches.batches * batches.batch_size})"
  n = jax.process_count()
  now = _count(n, "process", "processes")
  if saved.process_count == n:
    return f"dlm: data order continues {where}: {streams} over {now}"
  local = batches.plan.local
  return (f"dlm: data order of {streams}, saved by "
          f"{_count(saved.process_count, 'process', 'processes')}, continues exactly on {now} "
          f"{where}; process {jax.process_index()} runs streams {local[0]}..{local[-1]}")


def _count(n: int, one: str, many: str) -> str:
  return f"{n} {one if n == 1 else many}"


def stream_file(stream: int, streams: int) -> str:
  return f"stream_{stream}-of-{streams}.json"


def parse_stream_file(name: str) -> tuple[int, int] | None:
  """(stream, streams) of `stream_S-of-N.json`, or of grain's `process_I-of-N.json` (the
  per-process files of checkpoints written before streams: the same thing, one per process)."""
  for prefix in ("stream_", "process_"):
    if name.startswith(prefix) and name.endswith(".json"):
      head, _, tail = name[len(prefix):-len(".json")].partition("-of-")
      if head.isdigit() and tail.isdigit():
        return int(head), int(tail)
  return None
