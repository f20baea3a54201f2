"""Metrics to `WORKDIR/metrics.jsonl` (one JSON object per line, with `step`) and TensorBoard
event files in `WORKDIR/tensorboard`; process 0 only."""

from __future__ import annotations

import json
import math
import os

import jax

from dlm.errors import DlmError


class MetricWriter:

  def __init__(self, workdir: str, *, resume_step: int | None = None):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not self.enabled:
      return
    with self._writing():
      os.makedirs(workdir, exist_ok=True)
      if os.path.exists(self.path):
        self._truncate(resume_step or 0)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

    self._tb_dir = os.path.join(workdir, "tensorboard")
    self._tb = SummaryWriter(self._tb_dir)

  def _writing(self):
    return _OsErrors(f"cannot write {self.path}")

  def _lines(self) -> list[dict]:
    """The logged lines; one cut short by a crash mid-write is dropped."""
    out = []
    with open(self.path) as f:
      for line in f:
        try:
          out.append(json.loads(line))
        except json.JSONDecodeError:
          continue
    return out

  def _truncate(self, step: int) -> None:
    """A resumed run drops what the interrupted one logged after its last checkpoint."""
    kept = [line for line in self._lines() if line.get("step", 0) <= step]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(json.dumps(line) + "\n" for line in kept)
    os.replace(tmp, self.path)

  def find(self, step: int, prefix: str) -> dict | None:
    """The metrics logged at `step` whose names start with `prefix` (None if none were)."""
    if not os.path.exists(self.path):  # every process reads it (a shared workdir)
      return None
    for line in reversed(self._lines()):
      if line.get("step") == step and any(k.startswith(prefix) for k in line):
        return {k: v for k, v in line.items() if k.startswith(prefix)}
    return None

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    clean = {k: (float(v) if not isinstance(v, (int, str)) else v) for k, v in metrics.items()}
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in clean.items()}
    with self._writing():
      with open(self.path, "a") as f:
        f.write(json.dumps({"step": int(step), **clean}) + "\n")
    for k, v in clean.items():
      if isinstance(v, (int, float)):
        self._tb.add_scalar(k, v, int(step))

  def close(self) -> None:
    if self._tb is None:
      return
    tb, self._tb = self._tb, None
    try:
      with _OsErrors(f"cannot write the TensorBoard events in {self._tb_dir}"):
        tb.close()
    except DlmError:
      _abandon(tb)
      raise


def _abandon(tb) -> None:
  """After a failed close (a full disk): stops tensorboardX's writer threads and marks their
  event files closed, so neither its exit hook (which would close, fail and print a traceback
  again) nor the thread touches them; the events not yet written are lost, metrics.jsonl keeps
  its lines. tensorboardX has no public way to give up on a file, hence its private fields."""
  for file_writer in (tb.all_writers or {}).values():
    events = file_writer.event_writer
    worker = getattr(events, "_worker", None)
    if worker is not None and worker.is_alive():
      worker.stop()
    events._closed = True  # pylint: disable=protected-access


class _OsErrors:
  """An OSError inside (no space left, read-only file system) as one DlmError line."""

  def __init__(self, what: str):
    self.what = what

  def __enter__(self):
    return self

  def __exit__(self, kind, value, tb):
    if kind is not None and issubclass(kind, OSError):
      raise DlmError(f"{self.what}: {value.strerror or value}") from None
    return False
