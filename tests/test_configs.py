"""Every experiment config loads, validates, keeps the documented keys, and builds its model."""

import pathlib

import jax
import pytest
from flax import nnx

from dlm import config as config_lib
from dlm import models

ROOT = pathlib.Path(__file__).resolve().parents[1]
# configs/finetune.py reads a workdir (WORKDIR in its command): tests/test_convert.py runs it.
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.py") if p.name != "finetune.py")
KEYS = ("train.steps", "train.batch_size", "train.lr", "train.log_every", "train.eval_every",
        "train.checkpoint_every", "data.seq_len", "model.family", "mesh.shape")


class _Vocab:
  def __init__(self, n):
    self.vocab_size, self.mask_id = n, n - 1


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_builds(path):
  config = config_lib.from_file(str(path))
  for key in KEYS:
    section, name = key.split(".")
    assert name in config[section], key
  doc = path.read_text().split('"""')[1]
  assert "--config=configs/" + path.name in doc  # the docstring is the command that runs it
  # all-MiniLM-L6-v2's vocabulary: CCDD and Cosmos need their frozen encoder's tokenizer.
  model = nnx.eval_shape(lambda: models.build(config, _Vocab(30_522), nnx.Rngs(0)))
  n = sum(x.size for x in jax.tree.leaves(nnx.state(model)))
  assert n > 0


def test_mdlm_reference_shapes():
  lm1b = config_lib.from_file(str(ROOT / "configs/mdlm_lm1b.py"))
  assert (lm1b.model.depth, lm1b.model.width, lm1b.data.seq_len) == (12, 768, 128)
  assert lm1b.data.dataset == "tfds:lm1b" and lm1b.train.batch_size == 512
  owt = config_lib.from_file(str(ROOT / "configs/mdlm_owt.py"))
  assert (owt.model.depth, owt.model.width, owt.data.seq_len) == (12, 768, 1024)
