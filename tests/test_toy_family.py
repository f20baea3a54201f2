"""A new family needs only new files and one registration: a toy family defined here (its
config section, model, sampler) trains through the real train step, checkpoints, restores and
samples through `dlm.load` / `dlm.generate`, without any file under dlm/ knowing of it."""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import dlm
from dlm import config as config_lib
from dlm import registry
from dlm.errors import DlmError
from dlm.models import transformer
from dlm.models.family import scored_mask
from dlm.samplers import core
from dlm.train import loop

import metrics_log  # noqa: E402  (tests/)

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class ToyConfig:
  """Config section `toy_test`."""

  noise: float = 0.5  # share of tokens replaced by a uniformly random one

  def __post_init__(self):
    if not 0.0 < self.noise < 1.0:
      raise DlmError(f"toy_test.noise must be in (0, 1), got {self.noise}")


class ToyDenoiser(nnx.Module):
  """Uniform token noise at one level; the backbone predicts the clean tokens."""
  family = "toy_test"

  def __init__(self, net_cfg, noise: float, rngs: nnx.Rngs):
    self.net = transformer.Transformer(
        dataclasses.replace(net_cfg, time_conditioning="none"), rngs)
    self.noise = noise

  def denoise(self, tokens):
    return self.net(tokens)

  def corrupt(self, batch, rng):
    x = batch["tokens"]
    scored = scored_mask(batch)
    k_flip, k_token = jax.random.split(rng)
    flip = (jax.random.uniform(k_flip, x.shape) < self.noise) & scored
    z = jnp.where(flip, jax.random.randint(k_token, x.shape, 0, self.net.cfg.vocab_size), x)
    return {**batch, "z": z, "scored": scored}

  def loss(self, noisy, *, rng=None, train=True):
    del rng, train
    logits = self.net(noisy["z"], None, noisy["segment_ids"], noisy["positions"])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, noisy["tokens"])
    total = jnp.where(noisy["scored"], ce, 0.0).sum()
    return total, {"loss": total, "tokens": noisy["scored"].sum()}


def build(config, tokenizer, rngs):
  return ToyDenoiser(transformer.from_config(config, tokenizer.vocab_size),
                     config_lib.options(ToyConfig, config.toy_test).noise, rngs)


def toy_once(model, cfg, rng, canvas, times=None):
  """One denoising pass from uniform noise; given tokens kept."""
  del cfg, times
  vocab = model.net.cfg.vocab_size
  z = jnp.where(canvas.given, canvas.tokens,
                jax.random.randint(rng, canvas.tokens.shape, 0, vocab))
  tokens = jnp.where(canvas.given, canvas.tokens, jnp.argmax(model.denoise(z), -1))
  batch = canvas.tokens.shape[0]
  return core.Samples(tokens.astype(jnp.int32), jnp.ones((batch,), jnp.int32),
                      jnp.where(canvas.given, -1, 0).astype(jnp.int32))


@pytest.fixture(scope="module")
def toy_family():
  registry.register(registry.Family("toy_test", build, sections={"toy_test": ToyConfig}))
  core.register("toy_test", "toy_once")(toy_once)
  return "toy_test"


def test_a_family_from_outside_trains_checkpoints_restores_and_samples(toy_family, data_dir,
                                                                         tmp_path):
  config = config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"), **{
      "data.data_dir": data_dir, "model.family": toy_family, "toy_test.noise": 0.3,
      "model.width": 32, "model.depth": 2, "model.heads": 2, "data.seq_len": 32,
      "train.batch_size": 8, "train.steps": 3, "train.log_every": 1, "train.eval_every": 3,
      "train.checkpoint_every": 3, "train.eval_batches": 1, "train.progress": False,
      "train.async_checkpoint": False})
  result = loop.train(config, str(tmp_path))
  assert result["step"] == 3 and result["eval/loss"] > 0
  assert sorted(metrics_log.losses(tmp_path)) == [1, 2, 3]
  run = dlm.load(str(tmp_path))
  assert run.family == toy_family and run.step == 3 and run.config.toy_test.noise == 0.3
  texts = dlm.generate(run, "def add(a, b):", num_samples=2, steps=1)
  assert len(texts) == 2 and all(t.startswith("def add(a, b):") for t in texts)
  with pytest.raises(DlmError, match="toy_test.noise must be in"):
    config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"), **{"toy_test.noise": 1.5})
