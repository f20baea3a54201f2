"""Reading a run's metrics.jsonl in tests, and waiting for a running one's files."""

import json
import os
import time


def losses(workdir) -> dict:
  """{step: train/loss}; a step logged twice (e.g. by two processes) is an error."""
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      d = json.loads(line)
      if "train/loss" in d:
        assert d["step"] not in out, f"step {d['step']} logged twice (only process 0 logs)"
        out[d["step"]] = d["train/loss"]
  return out


def wait_for(path, proc, timeout=300):
  """Waits until `path` exists while the subprocess `proc` is still running."""
  start = time.time()
  while not os.path.exists(path):
    assert proc.poll() is None, proc.communicate()
    assert time.time() - start < timeout
    time.sleep(0.05)
