"""Peak memory of preparing and training on a corpus of one very long line.

  python bench/data_memory.py [--line_mb=50] [--steps=3]

Writes a `text:` corpus whose training split is one line of `line_mb` MB (random words) and
whose validation split is one short line, then runs `train.py` on it (the quickstart model,
`steps` steps, a fresh data directory: the preparation, the BPE training and the training all
run) and prints one JSON line with the child process's peak RSS and the wall time.
"""

import json
import os
import pathlib
import random
import resource
import subprocess
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_integer("line_mb", 50, "Size of the one training line, in MB.")
flags.DEFINE_integer("steps", 3, "Training steps.")
FLAGS = flags.FLAGS
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _write_line(path: pathlib.Path, size: int) -> None:
  rng = random.Random(0)
  words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
           for _ in range(5000)]
  written = 0
  with open(path, "w") as f:
    while written < size:
      chunk = " ".join(rng.choice(words) for _ in range(10000)) + " "
      f.write(chunk)
      written += len(chunk)
    f.write("\n")


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    _write_line(tmp / "train.txt", FLAGS.line_mb * 10**6)
    (tmp / "validation.txt").write_text("a short validation document with a few words\n")
    args = [sys.executable, "train.py", "--config=configs/quickstart.py:bpe",
            f"--workdir={tmp / 'work'}", f"--config.data.dataset=text:{tmp}/{{split}}.txt",
            f"--config.data.data_dir={tmp / 'tfds'}", f"--config.train.steps={FLAGS.steps}",
            f"--config.train.eval_every={FLAGS.steps}",
            f"--config.train.checkpoint_every={FLAGS.steps}", "--config.train.eval_batches=1",
            "--config.train.progress=false"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
      print(proc.stderr[-3000:], file=sys.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
    print(json.dumps({"bench": "data_memory", "line_mb": FLAGS.line_mb, "steps": FLAGS.steps,
                      "returncode": proc.returncode, "peak_rss_mb": round(peak),
                      "wall_s": round(wall, 1)}))


if __name__ == "__main__":
  app.run(main)
