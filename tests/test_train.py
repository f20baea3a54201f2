"""Training: sharded step equivalence, exact accumulation, one compile, EMA, checkpoints across
meshes, resume after SIGKILL and SIGTERM, and bad input."""

import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from entry_points import ONE_DEVICE_XLA_FLAGS  # noqa: E402  (tests/)
from jax.sharding import PartitionSpec as P

from dlm import config as config_lib
from dlm import models, sharding
from dlm.errors import DlmError
from dlm.train import batches
from dlm.train import checkpoint as ckpt_lib
from dlm.train import loop
from dlm.train import micro_batches
from dlm.train import optimizer as optim
from dlm.train import state as state_lib
from dlm.train import step as step_lib

import metrics_log  # noqa: E402  (tests/)

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {
    "model.width": 32, "model.depth": 2, "model.heads": 2, "model.cond_width": 16,
    "data.seq_len": 32, "train.batch_size": 8, "train.warmup_steps": 2, "train.lr": 1e-3,
    "train.progress": False,
}


@pytest.fixture(scope="module")
def tiny(quickstart):
  return config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"),
                              **{"data.data_dir": quickstart.data.data_dir, **TINY})


def _setup(config, tokenizer, mesh):
  tx, lr = optim.optimizer(config.train)
  graphdef, state, shardings = state_lib.create(
      lambda r: models.build(config, tokenizer, r), tx, mesh, config.mesh.rules, 0)
  bs = sharding.named_sharding(mesh, ("batch", "length"), config.mesh.rules)
  return graphdef, state, shardings, bs, tx, lr


def _local_batches(config, tokenizer, n):
  it = batches.train_batches(config, tokenizer, sharding.make_mesh((1, 1, 1), jax.devices()[:1]))
  out = [it.next_local() for _ in range(n)]
  it.close()
  return out


def _run_steps(config, tokenizer, mesh, batches):
  graphdef, state, shardings, bs, tx, lr = _setup(config, tokenizer, mesh)
  step = step_lib.make_train_step(graphdef, tx, lr, config.train, shardings, bs)
  losses = []
  with jax.set_mesh(mesh):
    for b in batches:
      state, m = step(state, {k: jax.device_put(v, bs) for k, v in b.items()})
      losses.append(float(m["loss"]))
  return state, losses, step


def _assert_trees_close(a, b, rtol=2e-5, atol=2e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                       rtol=rtol, atol=atol), a, b)


def test_sharded_step_equals_single_device(tiny, tokenizer):
  assert jax.device_count() == 8
  batches = _local_batches(tiny, tokenizer, 2)
  one, losses_one, _ = _run_steps(tiny, tokenizer, sharding.make_mesh((1, 1, 1), jax.devices()[:1]),
                                  batches)
  mesh = sharding.make_mesh((2, 2, 2))
  many, losses_many, _ = _run_steps(tiny, tokenizer, mesh, batches)
  np.testing.assert_allclose(losses_one, losses_many, rtol=1e-5)
  _assert_trees_close(one.params, many.params)
  blocks = many.params["net"]["blocks"][0]
  assert blocks["attn"]["wqkv"].sharding.spec == P("fsdp", None, "tensor", None)
  assert blocks["mlp"]["w_down"].sharding.spec == P("tensor", "fsdp")
  assert many.params["net"]["embed"].sharding.spec == P("tensor", "fsdp")
  assert many.params["net"]["unembed"].sharding.spec == P("fsdp", "tensor")
  mu = many.opt_state[1][0].mu["net"]["embed"]  # AdamW moments follow their parameters
  assert mu.sharding.spec == P("tensor", "fsdp")
  assert many.step.sharding.spec == P()


def _collective_shapes(hlo: str, op: str) -> list[tuple[int, ...]]:
  """Output shapes of every `op` (all-gather, all-reduce, reduce-scatter) in HLO text."""
  shapes = []
  for line in hlo.splitlines():
    m = re.search(rf"= (.*?) {op}\(", line)
    if m:
      shapes += [tuple(int(d) for d in dims.split(",") if d)
                 for dims in re.findall(r"[a-z]\d+\[([\d,]*)\]", m.group(1))]
  return shapes


def test_data_fsdp_and_tensor_parallel_agree_and_fsdp_gathers_and_scatters(tiny, tokenizer):
  batches = _local_batches(tiny, tokenizer, 2)
  runs = {shape: _run_steps(tiny, tokenizer, sharding.make_mesh(shape), batches)
          for shape in ((8, 1, 1), (1, 8, 1), (4, 1, 2))}  # data, FSDP, tensor (x data)
  data_state, data_losses, _ = runs[(8, 1, 1)]
  for shape in ((1, 8, 1), (4, 1, 2)):
    np.testing.assert_allclose(runs[shape][1], data_losses, rtol=1e-5)
    _assert_trees_close(runs[shape][0].params, data_state.params)
  fsdp, _, step = runs[(1, 8, 1)]
  mesh = sharding.make_mesh((1, 8, 1))
  bs = sharding.named_sharding(mesh, ("batch", "length"), tiny.mesh.rules)
  with jax.set_mesh(mesh):
    hlo = step.lower(fsdp, {k: jax.device_put(v, bs) for k, v in batches[0].items()}
                     ).compile().as_text()
  gathered = _collective_shapes(hlo, "all-gather")
  reduced = {math.prod(s) for s in _collective_shapes(hlo, "all-reduce")}
  scattered = _collective_shapes(hlo, "reduce-scatter")
  flat = jax.tree_util.tree_flatten_with_path(fsdp.params)[0]
  sharded = [(jax.tree_util.keystr(p), x) for p, x in flat if "fsdp" in x.sharding.spec]
  assert len(sharded) >= 6  # qkv, out, in, down per block; embed, unembed
  for name, x in sharded:
    dim = x.sharding.spec.index("fsdp")
    shard = x.shape[:dim] + (x.shape[dim] // 8,) + x.shape[dim + 1:]
    # The returned state stays sharded: each device holds an eighth.
    assert {s.data.shape for s in x.addressable_shards} == {shard}, name
    # Forward and backward gather the whole parameter ...
    assert x.shape in gathered, f"{name}: no all-gather to {x.shape}"
    # ... and its gradient is reduce-scattered back to the shard: a reduce-scatter, or (XLA:CPU,
    # whose pipeline has no reduce-scatter creator) an all-reduce of the whole gradient that
    # each device then slices.
    assert shard in scattered or (x.size in reduced and "dynamic-slice" in hlo), name


def test_gradient_accumulation_gives_the_same_update(tiny, tokenizer):
  batches = _local_batches(tiny, tokenizer, 2)
  mesh = sharding.make_mesh((2, 2, 2))
  full, losses_full, _ = _run_steps(tiny, tokenizer, mesh, batches)
  accum_cfg = config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"),
                                   **{"data.data_dir": tiny.data.data_dir, **TINY,
                                      "train.grad_accum": 2})
  acc, losses_acc, _ = _run_steps(accum_cfg, tokenizer, mesh, batches)
  np.testing.assert_allclose(losses_full, losses_acc, rtol=1e-5)
  _assert_trees_close(full.params, acc.params)


def test_automatic_micro_batches_give_the_same_update(tiny, tokenizer, monkeypatch):
  """train.grad_accum=0 chooses the micro-batches from the compiled step's memory estimate;
  with a CPU budget of one byte it splits as far as the rows allow, and the update is still
  that of one micro-batch."""
  assert tiny.train.grad_accum == 0  # the default
  batches = _local_batches(tiny, tokenizer, 2)
  mesh = sharding.make_mesh((2, 2, 2))
  full, losses_full, _ = _run_steps(tiny, tokenizer, mesh, batches)
  monkeypatch.setattr(micro_batches, "CPU_TEMP_BYTES", 1)
  graphdef, state, shardings, bs, tx, lr = _setup(tiny, tokenizer, mesh)
  step = micro_batches.AutoStep(
      lambda k: step_lib.make_train_step(graphdef, tx, lr, tiny.train, shardings, bs, accum=k),
      bs, verbose=False)
  losses = []
  with jax.set_mesh(mesh):
    for b in batches:
      state, m = step(state, {k: jax.device_put(v, bs) for k, v in b.items()})
      losses.append(float(m["loss"]))
  assert step.accum == tiny.train.batch_size // 4 > 1  # (data, fsdp) = 4 ways: a row each
  np.testing.assert_allclose(losses_full, losses, rtol=1e-5)
  _assert_trees_close(full.params, state.params)


def test_micro_batch_choice_by_platform():
  """CPU: temporaries per micro-batch under the budget; accelerators: one micro-batch while the
  estimate fits the device, else the fewest that fit; no estimate or no size: one."""
  class Compiled:
    def __init__(self, temp, fixed):
      self.sizes = dict(temp_size_in_bytes=temp, argument_size_in_bytes=fixed,
                        output_size_in_bytes=0, alias_size_in_bytes=0)

    def memory_analysis(self):
      return types.SimpleNamespace(**self.sizes)

  compiled = []

  def compile_with(k):
    compiled.append(k)
    return Compiled(8 * 2**30 / k, 2 * 2**30)

  gib = 2**30
  for platform, memory, expected, compiles in (
      ("gpu", 80 * gib, 1, [1]), ("gpu", 10 * gib, 2, [1, 2]), ("tpu", 4 * gib, 8, [1, 8]),
      ("gpu", None, 1, [1]), ("cpu", None, 16, [1, 16])):
    compiled.clear()
    k, _, why = micro_batches.choose(compile_with, 16, platform, memory)
    assert (k, compiled) == (expected, compiles), (platform, memory, why)
  compiled.clear()
  k, _, why = micro_batches.choose(lambda k: object(), 16, "cpu", None)
  assert k == 1 and "no memory estimate" in why


def test_step_compiles_once_and_ema_warms_up(tiny, tokenizer):
  mesh = sharding.make_mesh((2, 2, 2))
  batches = _local_batches(tiny, tokenizer, 3)
  graphdef, state, shardings, bs, tx, lr = _setup(tiny, tokenizer, mesh)
  init = jax.device_get(state.params)
  step = step_lib.make_train_step(graphdef, tx, lr, tiny.train, shardings, bs)
  with jax.set_mesh(mesh):
    state, _ = step(state, {k: jax.device_put(v, bs) for k, v in batches[0].items()})
    after_one = jax.device_get(state)
    for b in batches[1:]:
      state, _ = step(state, {k: jax.device_put(v, bs) for k, v in b.items()})
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert int(state.step) == 3
  # decay at step 0 is min(0.9999, 1/10): the EMA moves 90% of the way to the new params.
  _assert_trees_close(after_one.ema, jax.tree.map(lambda i, p: 0.1 * i + 0.9 * p, init,
                                                  after_one.params))


def test_checkpoint_restores_onto_other_meshes(tiny, tokenizer, tmp_path):
  batches = _local_batches(tiny, tokenizer, 2)
  mesh = sharding.make_mesh((2, 2, 2))
  state, _, _ = _run_steps(tiny, tokenizer, mesh, batches[:1])
  ckpts = ckpt_lib.Checkpoints(str(tmp_path), async_save=False)
  ckpts.save(state, None, tiny, tokenizer)
  ckpts.close()
  expected = jax.device_get(state)
  for shape, devices in (((1, 1, 1), jax.devices()[:1]), ((8, 1, 1), None), ((1, 4, 2), None)):
    other = sharding.make_mesh(shape, devices)
    tx, _ = optim.optimizer(tiny.train)
    _, abstract, shardings = state_lib.create_abstract(
        lambda r: models.build(tiny, tokenizer, r), tx, other, tiny.mesh.rules, 0)
    ckpts = ckpt_lib.Checkpoints(str(tmp_path), async_save=False)
    restored = ckpts.restore(1, state_lib.abstract(abstract, shardings))
    ckpts.close()
    _assert_trees_close(expected, jax.device_get(restored), rtol=0, atol=0)
    leaf = restored.params["net"]["unembed"]
    assert leaf.sharding.mesh.shape == dict(zip(sharding.MESH_AXES, shape))
    assert leaf.sharding == shardings.params["net"]["unembed"]


def _train_cmd(workdir, data_dir, *extra):
  args = [f"--config.{k}={v}" for k, v in TINY.items()]
  return [sys.executable, str(ROOT / "train.py"), "--config=configs/quickstart.py:bpe",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *args,
          "--config.train.steps=8", "--config.train.log_every=1", "--config.train.eval_every=8",
          "--config.train.checkpoint_every=4", "--config.train.eval_batches=2",
          "--config.train.async_checkpoint=false", *extra]


_losses = metrics_log.losses


def _env():
  return {**os.environ, "XLA_FLAGS": ONE_DEVICE_XLA_FLAGS, "JAX_PLATFORMS": "cpu"}


_wait_for = metrics_log.wait_for


def test_resume_after_sigkill_and_sigterm_matches_uninterrupted(tiny, tmp_path):
  data_dir = tiny.data.data_dir
  full = tmp_path / "full"
  subprocess.run(_train_cmd(full, data_dir), cwd=ROOT, env=_env(), check=True,
                 capture_output=True)
  reference = _losses(full)
  assert sorted(reference) == list(range(1, 9))

  # SIGKILL right after the step-4 checkpoint is committed, then restart.
  killed = tmp_path / "killed"
  proc = subprocess.Popen(_train_cmd(killed, data_dir), cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  _wait_for(killed / "checkpoints" / "4" / "commit_success.txt", proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = subprocess.run(_train_cmd(killed, data_dir), cwd=ROOT, env=_env(),
                        capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  assert "resuming at step 4" in done.stderr
  np.testing.assert_allclose([_losses(killed)[s] for s in range(1, 9)],
                             [reference[s] for s in range(1, 9)], rtol=1e-6)

  # SIGTERM (preemption): a checkpoint at the current step, a clean exit, then resume.
  termed = tmp_path / "termed"
  proc = subprocess.Popen(_train_cmd(termed, data_dir, "--config.train.steps=400",
                                     "--config.train.checkpoint_every=1000",
                                     "--config.train.eval_every=1000"),
                          cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  _wait_for(termed / "metrics.jsonl", proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  assert "preempted at step" in err
  step = ckpt_lib.Checkpoints(str(termed), read_only=True).latest_step()
  assert step is not None and 1 <= step < 400


def _expect_error(config, workdir, message):
  with pytest.raises(DlmError, match=message):
    loop.train(config, str(workdir))


def test_bad_training_input(tiny, tmp_path):
  base = {"data.data_dir": tiny.data.data_dir, **TINY, "train.steps": 2, "train.eval_every": 2,
          "train.checkpoint_every": 2, "train.eval_batches": 1, "train.async_checkpoint": False}
  cfg = lambda **kw: config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"),  # noqa: E731
                                          **{**base, **kw})
  _expect_error(cfg(**{"mesh.shape": (3, 1, 1)}), tmp_path / "a",
                r"mesh.shape=\(3, 1, 1\) needs 3 devices but 8 are available")
  _expect_error(cfg(**{"mesh.shape": (-1, 3, 1)}), tmp_path / "a", "does not divide the 8 devices")
  _expect_error(cfg(**{"train.batch_size": 6}), tmp_path / "b",
                "train.batch_size=6 cannot be split over the mesh's batch axes")
  _expect_error(cfg(**{"mesh.shape": (1, 1, 8), "model.heads": 2}), tmp_path / "c",
                "cannot split")
  loop.train(cfg(), str(tmp_path / "d"))
  _expect_error(cfg(**{"model.width": 64}), tmp_path / "d", "was trained with model.width=32, not 64")
  _expect_error(cfg(**{"data.tokenizer.vocab_size": 4096}), tmp_path / "d",
                "trained with another tokenizer")
  with pytest.raises(DlmError, match="unknown model.family"):
    cfg(**{"model.family": "nope"})
  with pytest.raises(KeyError):
    cfg(**{"train.no_such_key": 1})


def test_cli_names_unknown_key_and_mesh_problems(tiny, tmp_path):
  for flag, message in (("--config.train.no_such_key=1", "unknown config key 'train.no_such_key'"),
                        ("--config.mesh.shape=(3,1,1)", "needs 3 devices but 1 are available")):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"),
                           "--config=configs/quickstart.py:bpe", f"--workdir={tmp_path}",
                           f"--config.data.data_dir={tiny.data.data_dir}", flag],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr


def test_autoregressive_baseline_scores_within_documents(tiny, tokenizer):
  config = config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"),
                                **{"data.data_dir": tiny.data.data_dir, **TINY,
                                   "model.family": "autoregressive", "model.head_init_std": 0.0})
  model = models.build(config, tokenizer, __import__("flax").nnx.Rngs(0))
  assert model.net.cfg.attention == "causal"
  x = jnp.array([[5, 6, 7, 8, 9, 10]])
  batch = {"tokens": x, "segment_ids": jnp.array([[1, 1, 1, 2, 2, 0]]),
           "positions": jnp.array([[0, 1, 2, 0, 1, 0]])}
  nll, scored = model.token_nll(batch)
  assert scored.tolist() == [[False, True, True, False, True, False]]
  total, metrics = model.loss(batch, train=False)
  assert int(metrics["tokens"]) == 3 and float(total) == pytest.approx(float(nll.sum()))
  uniform = 3 * np.log(tokenizer.vocab_size)  # zero-initialised head: uniform predictions
  assert float(total) == pytest.approx(uniform, rel=1e-5)


def test_autoregressive_sampling_stops_each_row_at_its_eos(tiny, tokenizer):
  """A zero head draws from the output bias alone: eos or one other token, evenly. Each row
  stops at its own first eos: no pass after it, its later free positions repeat it, and a
  given suffix is kept."""
  from dlm import samplers
  from dlm.samplers import text

  config = config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"),
                                **{"data.data_dir": tiny.data.data_dir, **TINY,
                                   "model.family": "autoregressive", "model.head_init_std": 0.0})
  model = models.build(config, tokenizer, __import__("flax").nnx.Rngs(0))
  bias = np.full((tokenizer.vocab_size,), -1e4, np.float32)
  bias[[tokenizer.eos_id, 100]] = 0.0
  model.net.unembed_bias[...] = jnp.asarray(bias)
  length = 24
  tokens = np.full((length,), tokenizer.mask_id, np.int32)
  given = np.zeros((length,), bool)
  tokens[0], given[0] = tokenizer.eos_id, True  # the unprompted start token
  tokens[-2:], given[-2:] = (300, 301), True  # a given suffix after the free positions
  out = text.fill(model, tokenizer, samplers.SamplerConfig(name="autoregressive"),
                  [(tokens, given)] * 16, seed=0)
  stops = set()
  for r in out:
    full = np.asarray(r["full_tokens"])
    free = np.flatnonzero(~given)
    np.testing.assert_array_equal(full[given], tokens[given])
    first = next(i for i in free if full[i] == tokenizer.eos_id)  # stop prob. 1/2 each step
    before, after = free[free < first], free[free > first]
    assert np.all(full[before] == 100) and np.all(full[after] == tokenizer.eos_id)
    assert r["nfe"] == len(before) + 1
    stops.add(int(first))
  assert len(stops) > 1  # rows stop at their own positions


@pytest.mark.parametrize("flags, stopped", [
    ([0, 1, 1, 1, 0, 0], (2, 4)),  # exactly `limit` in a row, then a good step: stop
    ([1, 1, 0, 1, 1, 0], None),  # never `limit` in a row
    ([1, 1, 1, 1, 1, 1], (1, 3)),  # the first run of `limit` is the one reported
])
def test_non_finite_steps_stop_after_limit_in_a_row(flags, stopped):
  """The loop reads a step's flag when the next one is queued; `limit` skipped steps in a row
  stop the run whatever the step after them does."""
  counter = loop._NonFinite(3)  # pylint: disable=protected-access
  for step, flag in enumerate(flags, start=1):
    counter.push(step, flag)
  counter.flush()
  assert counter.stopped == stopped
  assert counter.since_log == sum(flags)


def test_a_non_finite_step_changes_nothing_but_the_step_count(tiny, tokenizer):
  """A NaN anywhere in the loss or gradients skips the update: parameters, optimizer moments
  and EMA stay bit for bit, the step counter advances, `skipped` says so."""
  mesh = sharding.make_mesh((2, 2, 2))
  batch = _local_batches(tiny, tokenizer, 1)[0]
  graphdef, state, shardings, bs, tx, lr = _setup(tiny, tokenizer, mesh)
  step = step_lib.make_train_step(graphdef, tx, lr, tiny.train, shardings, bs)
  device_batch = {k: jax.device_put(v, bs) for k, v in batch.items()}
  with jax.set_mesh(mesh):
    good, metrics = step(state, device_batch)
    assert int(metrics["skipped"]) == 0
    before = jax.device_get(good)
    poisoned = good.replace(params=jax.tree_util.tree_map_with_path(
        lambda path, x: x.at[0, 0].set(jnp.nan) if "w_down" in jax.tree_util.keystr(path)
        else x, good.params))
    poisoned_host = jax.device_get(poisoned)
    after, metrics = step(poisoned, device_batch)
  assert int(metrics["skipped"]) == 1 and not np.isfinite(float(metrics["loss"]))
  after = jax.device_get(after)
  assert int(after.step) == int(before.step) + 1
  for a, b in ((after.params, poisoned_host.params), (after.opt_state, poisoned_host.opt_state),
               (after.ema, poisoned_host.ema)):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("script", ["train.py", "sample.py"])
def test_entry_points_run_with_huge_page_allocations_unless_told_otherwise(script):
  """train.py and sample.py start again once with glibc's hugetlb tunable set (glibc reads it
  only at start); a GLIBC_TUNABLES the user set is left alone."""
  code = ("import os, runpy, sys; print(os.environ.get('GLIBC_TUNABLES'), flush=True); "
          f"sys.argv = ['{script}', '--helpshort']; runpy.run_path('{script}', "
          "run_name='__main__')")
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  for preset, printed in ((None, ["None", "glibc.malloc.hugetlb=1"]), ("x", ["x"])):
    if preset:
      env["GLIBC_TUNABLES"] = preset
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert lines[:len(printed)] == printed, proc.stdout  # one start more, with the tunable
    assert lines[len(printed)] not in ("None", "x", "glibc.malloc.hugetlb=1"), proc.stdout
