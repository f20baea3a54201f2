"""Metrics to `WORKDIR/metrics.jsonl` (one JSON object per line, with `step`) and TensorBoard
event files in `WORKDIR/tensorboard`; process 0 only."""

from __future__ import annotations

import json
import math
import os

import jax


class MetricWriter:

  def __init__(self, workdir: str, *, resume_step: int | None = None):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(self.path):
      self._truncate(resume_step or 0)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def _truncate(self, step: int) -> None:
    """A resumed run drops what the interrupted one logged after its last checkpoint."""
    with open(self.path) as f:
      kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, self.path)

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    clean = {k: (float(v) if not isinstance(v, (int, str)) else v) for k, v in metrics.items()}
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in clean.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **clean}) + "\n")
    for k, v in clean.items():
      if isinstance(v, (int, float)):
        self._tb.add_scalar(k, v, int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
