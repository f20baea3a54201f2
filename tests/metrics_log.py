"""Reading a run's metrics.jsonl in tests."""

import json
import os


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
