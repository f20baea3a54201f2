"""Pretrained and frozen parameters (dlm/train/pretrained.py): a run initialised from another
workdir starts from its parameters, frozen ones never change and carry no optimizer moments."""

import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from dlm import config as config_lib
from dlm import models
from dlm.errors import DlmError
from dlm.train import loop
from dlm.train import restore
from dlm.train import optimizer as optim
from dlm.train import pretrained

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {
    "model.width": 32, "model.depth": 2, "model.heads": 2, "model.cond_width": 16,
    "data.seq_len": 32, "train.batch_size": 8, "train.warmup_steps": 1, "train.lr": 3e-3,
    "train.progress": False, "train.steps": 3, "train.eval_batches": 1, "train.log_every": 1,
    "train.async_checkpoint": False,
}


def _config(quickstart, **overrides):
  return config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"),
                              **{"data.data_dir": quickstart.data.data_dir, **TINY, **overrides})


def _params(workdir, which):
  _, _, model, _ = restore.load(workdir, which=which)
  return pretrained.flat(jax.device_get(nnx.to_pure_dict(nnx.state(model))))


@pytest.fixture(scope="module")
def base_run(quickstart, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("base"))
  loop.train(_config(quickstart), workdir)
  return workdir


def test_init_from_and_freeze(quickstart, base_run, tmp_path):
  base = _params(base_run, "ema")
  tuned_dir = str(tmp_path / "tuned")
  loop.train(_config(quickstart, **{"train.init_from": base_run, "train.freeze": "^net/embed$",
                                    "train.seed": 7}), tuned_dir)
  tuned = _params(tuned_dir, "params")
  assert set(tuned) == set(base)
  # Frozen: exactly the base run's values after 3 steps at a high learning rate.
  np.testing.assert_array_equal(tuned["net/embed"], base["net/embed"])
  # Trained: started from the base (not from seed 7's initialisation) and moved.
  for path in ("net/blocks/0/attn/wqkv", "net/unembed"):
    assert not np.array_equal(tuned[path], base[path]), path
    assert np.abs(tuned[path] - base[path]).max() < 0.1, path


def test_frozen_parameters_have_no_optimizer_state(quickstart, tokenizer):
  config = _config(quickstart, **{"train.freeze": "^net/(embed|unembed)$"})
  model = nnx.eval_shape(lambda: models.build(config, tokenizer, nnx.Rngs(0)))
  params = nnx.to_pure_dict(nnx.state(model))
  mask = pretrained.frozen_mask(model, params, config.train.freeze)
  flags = pretrained.flat(mask)
  assert flags["net/embed"] and flags["net/unembed"] and not flags["net/blocks/0/attn/wo"]
  size = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731
  plain, _ = optim.optimizer(config.train)
  frozen, _ = optim.optimizer(config.train, mask)
  trained = sum(int(np.prod(v.shape)) for k, v in pretrained.flat(params).items() if not flags[k])
  moments = lambda tx: sum(  # noqa: E731  (step counters are scalars)
      int(np.prod(x.shape)) for x in jax.tree.leaves(jax.eval_shape(tx.init, params)) if x.shape)
  assert moments(plain) == 2 * size(params)
  assert moments(frozen) == 2 * trained


def test_bad_pretrained_settings(quickstart, base_run, tokenizer, tmp_path):
  with pytest.raises(DlmError, match="no place in this model"):
    loop.train(_config(quickstart, **{"train.init_from": base_run,
                                      "train.init_into": "nowhere"}), str(tmp_path / "a"))
  config = _config(quickstart, **{"train.freeze": "net/(embed"})
  model = nnx.eval_shape(lambda: models.build(config, tokenizer, nnx.Rngs(0)))
  with pytest.raises(DlmError, match="not a regular expression"):
    pretrained.frozen_mask(model, nnx.to_pure_dict(nnx.state(model)), config.train.freeze)
  with pytest.raises(DlmError, match="no checkpoint"):
    loop.train(_config(quickstart, **{"train.init_from": str(tmp_path / "missing")}),
               str(tmp_path / "b"))
