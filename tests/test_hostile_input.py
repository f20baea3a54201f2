"""Hostile input and faults through the real entry points (`train.py`, `sample.py`,
`python -m dlm.data`, `python -m dlm.evaluate`) in subprocesses: every case ends in exit status
2 with one `error:` line and no traceback, or in the correct behaviour, and nothing is lost.

Checkpoint faults (damaged items of several steps, a full disk) resume from the newest intact
step with the losses of an uninterrupted run. The read-only and full-disk cases mount their
own file systems in a user and mount namespace (`unshare -rm`)."""

import concurrent.futures
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import metrics_log  # noqa: E402  (tests/)
from entry_points import ONE_DEVICE_XLA_FLAGS, assert_one_error  # noqa: E402  (tests/)

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {"model.width": 32, "model.depth": 2, "model.heads": 2, "model.cond_width": 16,
        "data.seq_len": 32, "train.batch_size": 8, "train.warmup_steps": 2, "train.lr": 1e-3,
        "train.progress": False, "train.log_every": 1, "train.eval_batches": 1,
        "train.async_checkpoint": False, "train.keep_checkpoints": 20}
STEPS = 10


def _env(**extra):
  return {**os.environ, "XLA_FLAGS": ONE_DEVICE_XLA_FLAGS, "JAX_PLATFORMS": "cpu",
          "HF_HUB_OFFLINE": "1", **extra}


def _run(args, timeout=600, **kw):
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=timeout, **kw)


def _train_args(workdir, data_dir, *extra, steps=STEPS, checkpoint_every=1):
  settings = {**TINY, "train.steps": steps, "train.eval_every": steps,
              "train.checkpoint_every": checkpoint_every}
  return ["train.py", "--config=configs/quickstart.py:bpe", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}",
          *[f"--config.{k}={v}" for k, v in settings.items()], *extra]


def _copy_run(src, dst):
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns("train.lock"))
  return dst


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  """An uninterrupted 10-step run with a checkpoint at every step: the losses to match."""
  path = tmp_path_factory.mktemp("hostile") / "reference"
  proc = _run(_train_args(path, data_dir))
  assert proc.returncode == 0, proc.stderr[-3000:]
  losses = metrics_log.losses(path)
  assert sorted(losses) == list(range(1, STEPS + 1))
  return path, losses, proc


# Configuration: refused before any work ----------------------------------------------------


CONFIG_FILES = {
    "syntax.py": "def get_config(:\n  pass\n",
    "noget.py": "X = 1\n",
    "raises.py": "def get_config():\n  raise ValueError('boom in the config')\n",
    "notconfig.py": "def get_config():\n  return 5\n",
    "variant.py": ("from dlm.config import base_config\n"
                   "def get_config(arg):\n"
                   "  if arg not in ('a', 'b'):\n"
                   "    raise ValueError(f'unknown variant {arg!r}: choose a or b')\n"
                   "  return base_config()\n"),
}


def test_bad_configs_are_refused_before_any_work(tmp_path):
  for name, text in CONFIG_FILES.items():
    (tmp_path / name).write_text(text)
  work = tmp_path / "work"
  quick = ["--config=configs/quickstart.py:bpe", f"--workdir={work}"]
  cases = [
      (quick + ["--config.mesh.shape=foo"], "mesh.shape must be three integers"),
      (quick + ["--config.mesh.shape=(1,x)"], "mesh.shape must be three integers"),
      (quick + ["--config.model.width=0"], "model.width must be a positive integer"),
      (quick + ["--config.model.heads=-2"], "model.heads must be a positive integer"),
      (quick + ["--config.model.depth=0"], "model.depth must be a positive integer"),
      (quick + ["--config.train.lr=-0.001"], "train.lr must be a positive number"),
      (quick + ["--config.train.eval_batches=-1"], "train.eval_batches must be a non-negative"),
      (quick + ["--config.train.keep_checkpoints=0"], "train.keep_checkpoints must be a "
                                                      "positive integer"),
      (quick + ["--config.model.attention_impl=flash"],
       "model.attention_impl must be one of ('xla', 'cudnn', 'auto'), got 'flash'"),
      (quick + ["--config.ccdd.gamma=4.0"], "ccdd.gamma must be in (0, 2]"),
      (quick + ["--config.train.stepz=3"],
       "unknown config key 'train.stepz' (from --config.train.stepz=3); did you mean "
       "'train.steps'?"),
      (quick + ["--config.trian.steps=3"], "did you mean 'train.steps'?"),
      ([f"--config={tmp_path / 'syntax.py'}", f"--workdir={work}"], "syntax error at line 1"),
      ([f"--config={tmp_path / 'noget.py'}", f"--workdir={work}"], "has no get_config()"),
      ([f"--config={tmp_path / 'raises.py'}", f"--workdir={work}"],
       "get_config() failed: ValueError: boom in the config"),
      ([f"--config={tmp_path / 'notconfig.py'}", f"--workdir={work}"],
       "get_config() returned int, not an ml_collections ConfigDict"),
      ([f"--config={tmp_path / 'variant.py'}:zzz", f"--workdir={work}"],
       "get_config('zzz') failed: ValueError: unknown variant 'zzz': choose a or b"),
      ([f"--config={tmp_path / 'missing.py'}", f"--workdir={work}"], "does not exist"),
      (["--config=configs/quickstart.py:bpe", "--workdir=gs://bucket/run"], "is not a local path"),
      (quick + [f"--config.data.tokenizer.path={tmp_path}"],
       "is a directory without a tokenizer.json"),
      (quick + ["--config.data.streaming=True", "--config.data.tokenizer.train_documents=9"],
       "data.streaming reads hf: sources only, not 'tfds:python_stdlib/docs'"),
      (quick + ["--config.data.shuffle_window=0"],
       "data.shuffle_window must be a positive integer, got 0"),
      (quick + ["--config.data.prepare_workers=-1"],
       "data.prepare_workers must be a non-negative integer, got -1"),
      (quick + ["--config.train.grad_accum=-1"],
       "train.grad_accum must be a non-negative integer, got -1"),
      (quick + ["--config.train.grad_accum=5"],
       "train.grad_accum=5 must divide train.batch_size=32"),
      (quick + ["--config.diffusion.masking=counted"],
       "diffusion.masking must be one of ('time', 'count'), got 'counted'"),
      (quick + ["--config.diffusion.masking=count", "--config.diffusion.timesteps=8"],
       "diffusion.masking='count' is the continuous-time bound: it needs diffusion.timesteps=0"),
      (["--config=configs/ccdd.py:ccdd", f"--workdir={work}",
        "--config.ccdd.loss_weighting=snr"], "unknown ccdd.loss_weighting 'snr'"),
      (quick + ["--config.data.dataset=hf:owner/name", "--config.data.streaming=True"],
       "data.streaming with a BPE trained on the data needs data.tokenizer.train_documents"),
  ]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    procs = list(pool.map(lambda case: _run(["train.py", *case[0]]), cases))
  for (args, message), proc in zip(cases, procs):
    assert_one_error(proc, message)
  assert not (work / "checkpoints").exists()


def test_help_lists_the_config_flag():
  for args in (["train.py", "--help"], ["-m", "dlm.data", "--help"]):
    proc = _run(args)  # absl's --help exits with status 1
    assert proc.returncode in (0, 1) and "--config:" in proc.stdout, proc.stdout


# Data: found at start, named, bounded -----------------------------------------------------


def test_a_catalog_dataset_that_needs_tensorflow_names_the_prepare_extra(tmp_path):
  """TFDS's lm1b finds its files with TensorFlow; so does this stand-in. Without TensorFlow
  the error names the extra that brings it; with it, the dataset prepares and trains."""
  (tmp_path / "raw").mkdir()
  for split in ("train", "test"):
    (tmp_path / f"raw/{split}-0").write_text(
        "".join(f"{split} sentence number {i} of the stand-in .\n" for i in range(40)))
  code = ("import runpy, sys; sys.path.insert(0, 'tests'); import tfds_standin; "
          "sys.argv[0] = 'train.py'; runpy.run_path('train.py', run_name='__main__')")
  args = _train_args(tmp_path / "work", str(tmp_path / "tfds"), steps=1)[1:]
  proc = subprocess.run(
      [sys.executable, "-c", code, *args, "--config.data.dataset=tfds:lm1b_standin",
       "--config.data.eval_split=test", "--config.data.tokenizer.vocab_size=300"],
      cwd=ROOT, env=_env(LM1B_STANDIN_DIR=str(tmp_path / "raw")), capture_output=True,
      text=True, timeout=600)
  try:
    import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    assert_one_error(proc, "preparing lm1b_standin/1.1.0 needs 'tensorflow', which dlm does "
                           "not install: pip install 'dlm[prepare]'")
    assert not (tmp_path / "work/checkpoints").exists()
  else:
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_bad_data_is_refused_before_training(data_dir, tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty/a.txt").write_text("")
  (tmp_path / "empty/b.txt").write_text("   \n")
  (tmp_path / "utf").mkdir()
  (tmp_path / "utf/a.txt").write_text("fine text here\n")
  (tmp_path / "utf/b.txt").write_bytes(b"good line\nbad \xff\xfe line\n")
  (tmp_path / "one").mkdir()
  (tmp_path / "one/a.txt").write_text("a single document cannot fill two splits\n")
  (tmp_path / "few").mkdir()
  for name in ("train_a", "train_b", "validation_a"):
    (tmp_path / f"few/{name}.txt").write_text(f"the document {name} is short\n")
  import datasets  # pylint: disable=g-import-not-at-top

  datasets.Dataset.from_dict({"n": [1, 2, 3]}).save_to_disk(str(tmp_path / "numbers"))
  datasets.Dataset.from_dict({"text": ["some words"] * 40}).save_to_disk(str(tmp_path / "texts"))
  string = datasets.Features({"text": datasets.Value("string")})
  for name, table, features in (("rowless", {"text": []}, string), ("ints", {"n": [1]}, None)):
    (tmp_path / name).mkdir()
    datasets.Dataset.from_dict(table, features).to_parquet(str(tmp_path / f"{name}/a.parquet"))
  (tmp_path / "zero").mkdir()
  (tmp_path / "zero/a.parquet").write_bytes(b"")
  streamed = ["--config.data.streaming=True", "--config.data.tokenizer.train_documents=10"]
  data = tmp_path / "prepared"
  cases = [
      (f"text:{tmp_path}/empty/*.txt", [], "empty dataset: the files matching"),
      (f"text:{tmp_path}/utf/*.txt", ["--config.data.document_per=line"],
       f"{tmp_path}/utf/b.txt: not valid UTF-8 (line 2, byte 14"),
      (f"text:{tmp_path}/utf/*.txt",  # found by one of two worker processes
       ["--config.data.document_per=line", "--config.data.prepare_workers=2"],
       f"{tmp_path}/utf/b.txt: not valid UTF-8 (line 2, byte 14"),
      (f"text:{tmp_path}/one/*.txt", [], "has no 'validation' documents: the hash split"),
      (f"text:{tmp_path}/few/{{split}}_*.txt", ["--config.data.streams=4"],
       "data.streams=4 needs at least as many training documents; the split holds 2"),
      (f"hf:{tmp_path}/nowhere", [], "no such directory (a Dataset.save_to_disk"),
      ("hf:someowner/nonexistent", [], "cannot open the Hugging Face hub dataset"),
      (f"parquet:{tmp_path}/one/*.txt", [], "a.txt: not a readable parquet file"),
      (f"arrow:{tmp_path}/one/*.txt", [], "a.txt: not a readable arrow file"),
      (f"hf:{tmp_path}/one", [], "has no split 'validation' (splits: ['train'])"),
      (f"hf:{tmp_path}/numbers", [], "has no string column (columns: ['n'])"),
      (f"parquet:{tmp_path}/rowless/*.parquet", [], "empty dataset: the files matching parquet:"),
      (f"parquet:{tmp_path}/zero/*.parquet", [], "a.parquet: not a readable parquet file"),
      (f"parquet:{tmp_path}/ints/*.parquet", [], "a.parquet) has no string column"),
      (f"hf:{tmp_path}/texts", [*streamed, "--config.data.eval_split=test"],
       "has no split 'test' (splits: ['train', 'validation']"),
      ("hf:someowner/nonexistent", streamed, "cannot open the Hugging Face hub dataset"),
  ]
  for i, (dataset, extra, message) in enumerate(cases):
    work = tmp_path / f"work{i}"
    proc = _run(["train.py", "--config=configs/quickstart.py:bpe", f"--workdir={work}",
                 f"--config.data.dataset={dataset}", f"--config.data.data_dir={data}",
                 "--config.data.tokenizer.vocab_size=300", *extra])
    assert_one_error(proc, message)
    assert not (work / "checkpoints").exists() and not (work / "metrics.jsonl").exists()
  proc = _run(["-m", "dlm.data", "--config=configs/quickstart.py:bpe",
               "--config.data.dataset=tfds:huggingface:no_such_dataset",
               f"--config.data.data_dir={data}"], timeout=300)
  assert_one_error(proc, "cannot open dataset 'tfds:huggingface:no_such_dataset'")


# Checkpoint faults: resume from the newest intact step with the same losses ----------------


def _biggest_file(directory: pathlib.Path) -> pathlib.Path:
  return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _zero(path: pathlib.Path) -> None:
  path.write_bytes(b"\0" * path.stat().st_size)


def _truncate(path: pathlib.Path) -> None:
  with open(path, "r+b") as f:
    f.truncate(path.stat().st_size // 3)


# step -> (how it is damaged, the item named)
DAMAGE = {
    10: (lambda s: _truncate(_biggest_file(s / "params")), "params"),
    9: (lambda s: _zero(_biggest_file(s / "params")), "params"),
    8: (lambda s: (s / "params/_METADATA").unlink(), "params"),
    7: (lambda s: _truncate(_biggest_file(s / "ema")), "ema"),
    6: (lambda s: shutil.rmtree(s / "tokenizer"), "tokenizer"),
    5: (lambda s: (s / "config/metadata").write_text("{garbage"), "config"),
    4: (lambda s: (s / "data/stream_0-of-1.json").write_text(""), "data"),
    3: (lambda s: shutil.rmtree(s / "params"), "params"),
}


def test_damaged_checkpoints_are_skipped_and_training_continues(reference, data_dir, tmp_path):
  ref_dir, ref_losses, _ = reference
  run = _copy_run(ref_dir, tmp_path / "damaged")
  for step, (damage, _) in DAMAGE.items():
    damage(run / "checkpoints" / str(step))
  proc = _run(_train_args(run, data_dir))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  for step, (_, item) in DAMAGE.items():
    assert f"skipped the damaged checkpoint at step {step} ({item}:" in proc.stderr, proc.stderr
    assert (run / "damaged_checkpoints" / str(step)).is_dir()
  assert "resuming at step 2" in proc.stderr
  losses = metrics_log.losses(run)
  np.testing.assert_allclose([losses[s] for s in range(1, STEPS + 1)],
                             [ref_losses[s] for s in range(1, STEPS + 1)], rtol=1e-6)


def test_sampling_falls_back_past_a_damaged_checkpoint(reference, tmp_path):
  ref_dir, _, _ = reference
  run = _copy_run(ref_dir, tmp_path / "sample_damaged")
  _truncate(_biggest_file(run / "checkpoints/10/ema"))
  out = _run(["sample.py", f"--workdir={run}", "--num_samples=2", "--steps=4"])
  assert out.returncode == 0, out.stderr[-3000:]
  assert "skipped the damaged checkpoint at step 10 (ema:" in out.stderr
  assert "using step 9" in out.stderr and out.stdout.count("--- sample ") == 2
  assert_one_error(_run(["sample.py", f"--workdir={run}", "--step=10", "--steps=4"]),
                    f"the checkpoint at step 10 in {run}/checkpoints is damaged (ema: ")


def test_resuming_an_earlier_step_and_refusing_mismatches(reference, data_dir, tmp_path):
  ref_dir, ref_losses, ref_proc = reference
  run = _copy_run(ref_dir, tmp_path / "rewind")
  lines = (run / "metrics.jsonl").read_text()
  # A finished run, run again: the same result, nothing appended.
  again = _run(_train_args(run, data_dir))
  assert again.returncode == 0 and again.stdout == ref_proc.stdout, again.stderr[-3000:]
  assert (run / "metrics.jsonl").read_text() == lines
  cases = [
      (_train_args(run, data_dir, steps=6), "is at step 10, past train.steps=6"),
      (_train_args(run, data_dir, "--config.model.family=autoregressive"),
       "was trained with model.family='masked', not 'autoregressive'"),
      (_train_args(run, data_dir, "--config.model.depth=3"),
       "was trained with model.depth=2, not 3"),
      (_train_args(run, data_dir, "--step=11", steps=12), "no checkpoint at step 11"),
  ]
  for args, message in cases:  # one at a time: each takes the workdir's lock
    assert_one_error(_run(args), message)
  # --step: resume from step 6; the newer checkpoints are set aside, the losses are the same.
  proc = _run(_train_args(run, data_dir, "--step=6"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert sorted(int(p.name) for p in (run / "superseded_checkpoints").iterdir()) == [7, 8, 9, 10]
  losses = metrics_log.losses(run)
  assert [losses[s] for s in range(1, STEPS + 1)] == pytest.approx(
      [ref_losses[s] for s in range(1, STEPS + 1)], rel=1e-6)


def test_a_streamed_dataset_trains_and_resumes_with_the_same_losses(tmp_path):
  """`data.streaming`: trained from an hf: directory never prepared; stopped at step 3 and
  resumed, the data order (each stream's `datasets` position and shuffle window) continues
  as in an uninterrupted run."""
  import datasets  # pylint: disable=g-import-not-at-top

  words = "the of and a to in is was for on that with as by it at from his an were".split()
  rng = np.random.default_rng(0)
  docs = {split: [" ".join(rng.choice(words, rng.integers(5, 40))) for _ in range(n)]
          for split, n in (("train", 400), ("validation", 40))}
  datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": d}) for s, d in docs.items()}
                       ).save_to_disk(str(tmp_path / "corpus"))
  streamed = [f"--config.data.dataset=hf:{tmp_path}/corpus", "--config.data.streaming=True",
              "--config.data.shuffle_window=64", "--config.data.tokenizer.train_documents=100",
              "--config.data.tokenizer.vocab_size=300"]
  data = tmp_path / "data"
  whole, parts = tmp_path / "whole", tmp_path / "parts"
  inspect = ["-m", "dlm.data", "--config=configs/quickstart.py:bpe",
             f"--config.data.data_dir={data}",
             *streamed]
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    procs = list(pool.map(_run, [_train_args(whole, data, *streamed, steps=6),
                                 _train_args(parts, data, *streamed, steps=3), inspect]))
  for proc in procs:
    assert proc.returncode == 0, proc.stderr[-3000:]
  assert not (data / "hf_dataset").exists()  # nothing prepared
  info = json.loads(procs[2].stdout)  # python -m dlm.data counts a streamed split's head
  assert "streamed" in info and info["splits"]["train"]["documents"] == 400
  assert info["splits"]["validation"]["documents"] == 40
  proc = _run(_train_args(parts, data, *streamed, steps=6))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "data order continues at batch 3" in proc.stderr
  want, got = metrics_log.losses(whole), metrics_log.losses(parts)
  assert [got[s] for s in range(1, 7)] == pytest.approx([want[s] for s in range(1, 7)],
                                                        rel=1e-6)


# Signals, a second process, non-finite steps, a failing evaluation ------------------------


_wait_for = metrics_log.wait_for


def test_ctrl_c_checkpoints_and_a_second_run_is_refused(data_dir, tmp_path):
  run = tmp_path / "interrupted"
  proc = subprocess.Popen(
      [sys.executable, *_train_args(run, data_dir, steps=5000, checkpoint_every=10000)],
      cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _wait_for(run / "metrics.jsonl", proc)
  second = _run(_train_args(run, data_dir, steps=5000))
  assert_one_error(second, "is in use by another training run (pid ")
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert "interrupted (SIGINT) at step" in err and "Traceback" not in err
  step = int(err.split("interrupted (SIGINT) at step ")[1].split(";")[0])
  assert (run / "checkpoints" / str(step) / "commit_success.txt").exists()
  assert max(metrics_log.losses(run)) == step


def test_non_finite_steps_are_skipped_then_stop_with_a_checkpoint(data_dir, tmp_path):
  run = tmp_path / "exploding"
  # 1e30 is a valid learning rate that overflows the parameters after the warm-up's first step.
  proc = _run(_train_args(run, data_dir, "--config.train.lr=1e30",
                          "--config.train.max_nonfinite_steps=3", checkpoint_every=100))
  assert_one_error(proc, "consecutive training steps")
  assert "had a non-finite loss, gradient or update and were skipped" in proc.stderr
  logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  assert any(line["train/skipped_steps"] == 1 for line in logged)
  last = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
  sampled = _run(["sample.py", f"--workdir={run}", "--params=params", "--num_samples=1",
                  "--steps=2", "--temperature=0"])
  assert sampled.returncode == 0 and last >= 5, sampled.stderr[-3000:]


def test_a_failing_evaluation_keeps_the_training(data_dir, tmp_path):
  run = tmp_path / "eval_fails"
  script = tmp_path / "fail_eval.py"
  script.write_text(
      "import runpy, sys\n"
      "from dlm.train import loop\n"
      "def boom(self, params):\n"
      "  raise RuntimeError('evaluation blew up')\n"
      "loop.Evaluator.__call__ = boom\n"
      f"sys.argv = ['train.py'] + sys.argv[1:]\n"
      f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')\n")
  args = _train_args(run, data_dir, "--config.train.eval_every=3", checkpoint_every=100)[1:]
  proc = _run([str(script), *args])
  assert_one_error(proc, "evaluation at step 3 failed (RuntimeError: evaluation blew up); the "
                          "checkpoint at step 3 is saved")
  assert (run / "checkpoints/3/commit_success.txt").exists()


# Disks: read-only and full -----------------------------------------------------------------


def _in_namespace(script: str) -> subprocess.CompletedProcess:
  """Runs a shell script as root of a new user and mount namespace (its own mounts)."""
  return subprocess.run(["unshare", "-rm", "bash", "-c", script], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=600)


def _shell(args) -> str:
  return " ".join(f"'{a}'" for a in [sys.executable, *args])


def test_read_only_and_full_disks(reference, data_dir, tmp_path):
  ref_dir, ref_losses, _ = reference
  run = _copy_run(ref_dir, tmp_path / "read_only")
  proc = _in_namespace(
      f"mount --bind {run} {run} && mount -o remount,bind,ro {run} && "
      f"{_shell(_train_args(run, data_dir, steps=12))}")
  assert_one_error(proc, f"workdir '{run}' is not writable (Read-only file system)")
  sampled = _in_namespace(f"mount --bind {run} {run} && mount -o remount,bind,ro {run} && "
                          f"{_shell(['sample.py', f'--workdir={run}', '--steps=2'])}")
  assert sampled.returncode == 0 and "WARNING" not in sampled.stderr, sampled.stderr[-3000:]

  # A disk that holds the step-2 checkpoint but not the step-4 one: one line naming the path,
  # step 2 intact; with room again, the run resumes from it with the reference's losses.
  size_kb = sum(p.stat().st_size for p in (ref_dir / "checkpoints/2").rglob("*")
                if p.is_file()) * 3 // 2 // 1024 + 200
  disk = tmp_path / "disk"
  disk.mkdir()
  work = disk / "run"
  args = _train_args(work, data_dir, checkpoint_every=2)
  proc = _in_namespace(
      f"mount -t tmpfs -o size={size_kb}k tmpfs {disk} && {_shell(args)}; echo rc=$? >&2; "
      f"mount -o remount,size=64m {disk} && {_shell(args)}")
  first, second = proc.stderr.split("rc=")
  assert "rc=2" in "rc=" + second[:2], proc.stderr[-3000:]
  errors = [line for line in first.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in first, first[-3000:]
  assert errors[0].startswith(f"error: writing the checkpoint at step 4 to {work}/checkpoints "
                              "failed (No space left on device); the checkpoint at step 2 is "
                              "intact"), errors[0]
  assert "resuming at step 2" in second and proc.returncode == 0, second[-3000:]
  out = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  assert json.loads(out[-1])["step"] == STEPS


def test_a_full_disk_when_tensorboard_closes_is_one_error(tmp_path):
  """The event file's last flush fails: one DlmError, and tensorboardX's exit hook and writer
  thread stay quiet (they retried the close and printed tracebacks after the error line)."""
  script = (
      "import errno, sys\n"
      "from dlm.errors import DlmError\n"
      "from dlm.train.metrics import MetricWriter\n"
      "writer = MetricWriter(sys.argv[1])\n"
      "writer.write(1, {'loss': 1.0})\n"
      "def full():\n"
      "  raise OSError(errno.ENOSPC, 'No space left on device')\n"
      "for file_writer in writer._tb.all_writers.values():\n"
      "  file_writer.event_writer._ev_writer.flush = full\n"
      "try:\n"
      "  writer.close()\n"
      "except DlmError as e:\n"
      "  print(f'error: {e}', file=sys.stderr)\n")
  proc = _run(["-c", script, str(tmp_path)])
  assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert proc.stderr.strip() == (f"error: cannot write the TensorBoard events in "
                                 f"{tmp_path}/tensorboard: No space left on device")


# Sampling and evaluation input ---------------------------------------------------------------


def test_bad_sampling_input_and_literal_special_tokens(reference, tmp_path):
  ref_dir, _, _ = reference
  base = ["sample.py", f"--workdir={ref_dir}", "--steps=2"]
  cases = [
      (["--num_samples=0"], "--num_samples must be positive"),
      (["--length=-3"], "--length must be >= 0"),
      ([f"--output={tmp_path}/missing/dir/s.jsonl"], "does not exist"),
      ([f"--html={tmp_path}"], "is a directory"),
      (["--sampler=ddpm"], "does not sample masked models"),
      (["--steps=0"], "--steps must be positive, got 0"),
      (["--top_p=0"], "--top_p must be in (0, 1], got 0.0"),
      (["--grid=linear"], "--grid must be one of ('uniform', 'cosine'), got 'linear'"),
      (["--new_tokens=-1"], "--new_tokens must be >= 0, got -1"),
      (["--blocks_from=middle"], "--blocks_from must be one of ('prompt', 'canvas')"),
      (["--cache_refresh=-1"], "--cache_refresh must be >= 0, got -1"),
      (["--sampler=low_confidence", "--threshold=0.9", "--factor=1"],
       "threshold and factor are two rules for the same choice"),
  ]
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    procs = list(pool.map(lambda case: _run(base + case[0]), cases))
  for (_, message), proc in zip(cases, procs):
    assert_one_error(proc, message)

  out = _run(base + ["--num_samples=2", "--length=40", "--prompt=<|mask|> and <|eos|> [MASK]",
                     f"--output={tmp_path / 's.jsonl'}"])
  assert out.returncode == 0, out.stderr[-3000:]
  assert "warning: --length=40 is beyond the model's training length 32" in out.stderr
  assert "WARNING" not in out.stderr and "Traceback" not in out.stderr
  from dlm.train import checkpoint as ckpt_lib

  ckpts = ckpt_lib.Checkpoints(str(ref_dir), read_only=True)
  tok = ckpts.read_tokenizer(STEPS, ckpts.read_config(STEPS))
  ckpts.close()
  for row in (json.loads(line) for line in open(tmp_path / "s.jsonl")):
    given = [t for t, g in zip(row["full_tokens"], row["given"]) if g]
    assert len(row["full_tokens"]) == 40
    assert tok.mask_id not in given and tok.eos_id not in given  # text, not control tokens
    assert tok.decode(given) == "<|mask|> and <|eos|> [MASK]"


def test_evaluate_takes_its_own_batch_count(reference):
  ref_dir, _, _ = reference
  proc = _run(["-m", "dlm.evaluate", f"--workdir={ref_dir}", "--eval_batches=2"])
  assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr[-3000:]
  validation = json.loads(proc.stdout)["validation"]
  assert validation["eval_batches"] == 2 and validation["tokens"] == 2 * 8 * 32
  assert validation["real_tokens"] == 2 * 8 * 32 and "every real token" in validation["counted"]
  assert "validation: 100%" in proc.stderr  # the bound's progress bar
  assert_one_error(_run(["-m", "dlm.evaluate", f"--workdir={ref_dir}", "--eval_batches=-1"]),
                    "--eval_batches must be >= 0")


def test_bad_evaluation_and_schedule_flags_are_refused_before_any_work(reference, tmp_path):
  """dlm.evaluate and dlm.neodiff_schedule (an hour of Bayesian optimisation) check their flags
  and where they will write before loading anything."""
  ref_dir, _, _ = reference
  missing = f"--output={tmp_path}/missing/out.json"
  cases = [
      (["-m", "dlm.evaluate", missing], "does not exist"),
      (["-m", "dlm.evaluate", "--infill_span=0"], "--infill_span must be positive"),
      (["-m", "dlm.evaluate", "--sampler=nope"], "unknown sampler 'nope'"),
      (["-m", "dlm.evaluate", "--mauve", f"--mauve_features={tmp_path}/none"],
       "MAUVE features: no directory"),
      (["-m", "dlm.evaluate", "--mauve", f"--mauve_features={ref_dir}"],
       "features come from an autoregressive one"),
      (["-m", "dlm.evaluate", "--mauve", f"--mauve_features={tmp_path}"],
       "encoder file not found"),
      (["-m", "dlm.evaluate", f"--mauve_features={tmp_path}"], "it needs --mauve"),
      (["-m", "dlm.neodiff_schedule", missing], "does not exist"),
      (["-m", "dlm.neodiff_schedule", f"--output={tmp_path}"], "is a directory"),
      (["-m", "dlm.neodiff_schedule", "--steps=0"], "--steps must be >= 1, got 0"),
  ]
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    procs = list(pool.map(lambda case: _run([*case[0], f"--workdir={ref_dir}"]), cases))
  for (_, message), proc in zip(cases, procs):
    assert_one_error(proc, message)
  assert not (tmp_path / "missing").exists()
