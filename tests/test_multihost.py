"""Multi-process training on CPU: two local processes of four devices each (gloo collectives)
stand in for two hosts. FSDP over all eight devices, Orbax multi-host checkpoints, and a
restore in one process on another mesh that continues the same data order and losses as one
process would have; plus the start-up flags and the data-stream plan, without processes."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from dlm import config as config_lib
from dlm import distributed
from dlm.data import pipeline, sources
from dlm.errors import DlmError
from dlm.train import batches
from dlm.train import loop

import metrics_log  # noqa: E402  (tests/)

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {  # as tests/test_train.py, with a constant rate so 20 + 20 steps = 40 steps
    "model.width": 32, "model.depth": 2, "model.heads": 2, "model.cond_width": 16,
    "data.seq_len": 32, "train.batch_size": 8, "train.warmup_steps": 2, "train.lr": 1e-3,
    "train.progress": False, "train.lr_schedule": "constant", "train.log_every": 1,
    "train.eval_every": 1000, "train.checkpoint_every": 10, "train.eval_batches": 0,
    "data.eval_split": "validation[10:13]",  # 3 short documents: 2 + 1 per process
}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _args(workdir, data_dir, **overrides):
  config = {"data.data_dir": data_dir, **TINY, **overrides}
  return [sys.executable, str(ROOT / "train.py"), "--config=configs/quickstart.py:bpe",
          f"--workdir={workdir}", *[f"--config.{k}={v}" for k, v in config.items()]]


def _run_processes(n, devices, workdir, data_dir, timeout=400, **overrides):
  """Starts `n` processes of train.py (one coordinator); returns their (stdout, stderr)."""
  port = _free_port()
  procs = []
  for i in range(n):
    extra = ([f"--coordinator_address=localhost:{port}", f"--num_processes={n}",
              f"--process_id={i}"] if n > 1 else [])
    procs.append(subprocess.Popen(_args(workdir, data_dir, **overrides) + extra, cwd=ROOT,
                                  env=_env(devices), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=timeout))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  for i, (p, (_, err)) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f"process {i} of {n} failed:\n{err[-4000:]}"
  return outs


def _last_eval(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [d for d in map(json.loads, f) if "eval/tokens" in d][-1]


_losses = metrics_log.losses


@pytest.fixture(scope="module")
def prepared(quickstart, tokenizer):
  del tokenizer  # prepared (dataset and BPE) here, once, before any subprocess reads it
  return quickstart.data.data_dir


def test_gloo_cpu_collectives_are_available():
  assert distributed.gloo_available(), (
      "this jaxlib has no gloo CPU collectives (jax._src.lib._jax.make_gloo_tcp_collectives): "
      "multi-process CPU runs, and this file's tests, need them")


def test_two_processes_fsdp_then_one_process_continues_exactly(prepared, tokenizer, tmp_path):
  data_dir = prepared
  assert distributed.gloo_available(), "gloo CPU collectives are missing (see the test above)"
  # Two processes x 4 devices, FSDP over all 8, async multi-host checkpoints at 10 and 20.
  two = tmp_path / "two"
  outs = _run_processes(2, 4, two, data_dir, **{"train.steps": 20, "mesh.shape": "(1,8,1)"})
  (out0, err0), (out1, _) = outs
  assert "2 processes (flags), 8 devices, 4 per process" in err0
  assert "'fsdp': 8" in err0
  assert json.loads(out0.strip().splitlines()[-1])["step"] == 20  # stdout: the result alone
  assert not out1.strip(), "only process 0 prints the result"
  two_eval = _last_eval(two)
  data = two / "checkpoints" / "20" / "data"
  records = {p.name: json.loads(p.read_text()) for p in data.glob("stream_*.json")}
  assert sorted(records) == ["stream_0-of-2.json", "stream_1-of-2.json"]
  assert all(r["process_count"] == 2 and r["batches"] == 20 for r in records.values())

  # One process, 8 devices on a (2, 2, 2) mesh: restores the sharded state and both streams.
  (_, err), = _run_processes(1, 8, two, data_dir, **{"train.steps": 40, "mesh.shape": "(2,2,2)"})
  assert "resuming at step 20" in err
  assert ("data order of 2 streams, saved by 2 processes, continues exactly on 1 process at "
          "batch 20 (example 160)") in err

  # The reference: one process from scratch for 40 steps, with the same two streams.
  config = config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"),
                                **{"data.data_dir": data_dir, **TINY, "train.steps": 40,
                                   "mesh.shape": (1, 8, 1), "data.streams": 2,
                                   "train.async_checkpoint": False})
  loop.train(config, str(tmp_path / "one"))
  resumed, reference = _losses(two), _losses(tmp_path / "one")
  # Evaluation reads the same tokens whatever the process count (processes with fewer eval
  # batches run empty ones, the unigram counts are summed over processes).
  docs = sources.open_split(config.data, config.data.eval_split)
  shares = [len(list(pipeline.dataset(docs, tokenizer, seq_len=32, batch_size=4, shuffle=False,
                                      num_epochs=1, process_index=p, process_count=2)))
            for p in range(2)]
  assert shares[0] != shares[1], shares  # so the two processes' eval batches were uneven
  one_eval = _last_eval(tmp_path / "one")
  for key in ("eval/tokens", "eval/unigram_bits_per_token"):
    assert two_eval[key] == pytest.approx(one_eval[key], rel=1e-9), key
  assert sorted(resumed) == sorted(reference) == list(range(1, 41))
  np.testing.assert_allclose([resumed[s] for s in range(1, 41)],
                             [reference[s] for s in range(1, 41)], rtol=1e-5)


def test_processes_join_from_the_environment():
  """JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID instead of flags."""
  assert distributed.gloo_available(), "gloo CPU collectives are missing (see the test above)"
  script = ("from dlm import distributed; t = distributed.initialize(); import jax; "
            "print(t.how, jax.process_index(), jax.process_count(), jax.device_count())")
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env={**_env(2), "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                      "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)}) for i in range(2)]
  outs = []
  try:
    outs = [p.communicate(timeout=120) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  lines = [next(l for l in out.splitlines() if l.startswith("environment")) for out, _ in outs]
  assert lines == ["environment 0 2 4", "environment 1 2 4"], outs


def _rows(n, b=8):
  """Process p of n holds rows p*b/n .. (p+1)*b/n - 1 (as a batch-sharded mesh lays them)."""
  return {p: set(range(p * b // n, (p + 1) * b // n)) for p in range(n)}


def test_stream_plan_covers_every_row_once_whatever_the_process_count():
  rows = _rows
  one = batches.plan(2, 8, rows(1), 0)  # saved by 2 processes, resumed by 1
  assert one.local == one.owned == (0, 1) and one.rows_per_stream == 4
  two = [batches.plan(2, 8, rows(2), p) for p in range(2)]  # one stream each, as pipeline did
  assert [(p.local, p.owned) for p in two] == [((0,), (0,)), ((1,), (1,))]
  four = [batches.plan(2, 8, rows(4), p) for p in range(4)]  # two processes share a stream
  assert [(p.local, p.owned) for p in four] == [((0,), (0,)), ((0,), ()), ((1,), (1,)),
                                                 ((1,), ())]
  with pytest.raises(DlmError, match="cannot be split into 3 data streams"):
    batches.plan(3, 8, rows(1), 0)
  saved = batches.SavedPosition(streams=2, process_count=2, batches=20)
  assert batches.resolve_streams(0, saved, 1) == 2
  assert batches.resolve_streams(0, None, 4) == 4
  with pytest.raises(DlmError, match="has 2 streams but data.streams=4"):
    batches.resolve_streams(4, saved, 1)
  assert batches.parse_stream_file("stream_3-of-8.json") == (3, 8)
  assert batches.parse_stream_file("process_1-of-2.json") == (1, 2)  # grain's own files


def test_distributed_flags_and_environment(monkeypatch):
  with pytest.raises(DlmError, match="--num_processes, --process_id missing"):
    distributed.initialize(coordinator_address="localhost:1234")
  with pytest.raises(DlmError, match="must be below"):
    distributed.initialize("localhost:1234", 2, 2)
  for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID"):
    monkeypatch.delenv(var, raising=False)
  assert distributed.initialize() == distributed.Topology(0, 1, "single")
  # A one-task SLURM job is detected (as JAX would) and stays a single process.
  monkeypatch.setenv("SLURM_JOB_ID", "1")
  monkeypatch.setenv("SLURM_STEP_NODELIST", "node1")
  monkeypatch.setenv("SLURM_NTASKS", "1")
  monkeypatch.setenv("SLURM_PROCID", "0")
  monkeypatch.setenv("SLURM_LOCALID", "0")
  assert distributed.detected_cluster() == ("slurm", 1)
  assert distributed.initialize().how == "single"
