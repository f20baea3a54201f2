"""Continuous and NeoDiff families, and conditioning (given tokens) in every family: losses,
training that lowers the loss, sampling that keeps given tokens, checkpoints through sample.py."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm import config as config_lib
from dlm import models, samplers, sharding
from dlm.samplers import Canvas, SamplerConfig
from dlm.train import batches
from dlm.train import optimizer as optim
from dlm.train import state as state_lib
from dlm.train import step as step_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {
    "model.width": 32, "model.depth": 2, "model.heads": 2, "model.cond_width": 16,
    "data.seq_len": 32, "train.batch_size": 8, "train.warmup_steps": 2, "train.lr": 3e-3,
    "train.progress": False, "train.eval_batches": 1,
}


def _config(quickstart, name, **extra):
  return config_lib.from_file(str(ROOT / "configs" / name),
                              **{"data.data_dir": quickstart.data.data_dir, **TINY, **extra})


@pytest.fixture(scope="module", params=["continuous", "neodiff"])
def family(request, quickstart, tokenizer):
  """A tiny model of each continuous family, trained a few dozen steps on the quickstart data:
  (config, model, losses)."""
  extra = {"continuous.embed_dim": 16} if request.param == "continuous" else {
      "neodiff.embed_dim": 16}
  config = _config(quickstart, f"{request.param}.py", **extra)
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  tx, lr = optim.optimizer(config.train)
  graphdef, state, shardings = state_lib.create(
      lambda r: models.build(config, tokenizer, r), tx, mesh, config.mesh.rules, 0)
  it = batches.train_batches(config, tokenizer, mesh)
  step = step_lib.make_train_step(graphdef, tx, lr, config.train, shardings, it.sharding)
  losses = []
  with jax.set_mesh(mesh):
    for _ in range(40):
      state, m = step(state, next(it))
      losses.append(float(m["loss"]))
  it.close()
  from flax import nnx

  return config, nnx.merge(graphdef, state.params), losses


def test_training_lowers_the_loss(family):
  _, _, losses = family
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def _canvas(tokenizer, batch=2, length=32, given_upto=10):
  rng = np.random.default_rng(0)
  tokens = np.full((batch, length), tokenizer.mask_id, np.int32)
  given = np.zeros((batch, length), bool)
  tokens[:, :given_upto] = rng.integers(300, 1000, (batch, given_upto))
  given[:, :given_upto] = True
  tokens[:, -3:] = rng.integers(300, 1000, (batch, 3))  # a given suffix: infilling
  given[:, -3:] = True
  return Canvas(jnp.asarray(tokens), jnp.asarray(given))


def _batch(canvas, fill: int):
  """A training batch from a canvas: given tokens kept, every other token `fill`."""
  return {"tokens": jnp.where(canvas.given, canvas.tokens, fill),
          "segment_ids": jnp.ones_like(canvas.tokens),
          "positions": jnp.broadcast_to(jnp.arange(canvas.tokens.shape[1]),
                                        canvas.tokens.shape),
          "given": canvas.given}


def test_sampling_keeps_given_tokens(family, tokenizer):
  config, model, _ = family
  canvas = _canvas(tokenizer)
  for name in samplers.names(config.model.family):
    out = samplers.generate(model, SamplerConfig(name=name, steps=6), jax.random.PRNGKey(0),
                            canvas)
    tokens = np.asarray(out.tokens)
    assert tokens.shape == canvas.tokens.shape
    given = np.asarray(canvas.given)
    np.testing.assert_array_equal(tokens[given], np.asarray(canvas.tokens)[given])
    assert (tokens[~given] != tokenizer.mask_id).all()
    np.testing.assert_array_equal(np.asarray(out.nfe), 6)


def test_given_tokens_are_clean_and_unscored(family, tokenizer):
  """Time 0 and no loss on given tokens: changing them changes nothing but the context."""
  config, model, _ = family
  canvas = _canvas(tokenizer)
  batch = _batch(canvas, 500)
  noisy = model.corrupt(batch, jax.random.PRNGKey(1))
  t = noisy["t"] if "t" in noisy else noisy["tau"]
  assert (np.asarray(t)[np.asarray(canvas.given)] == 0).all()
  if hasattr(model, "time_levels"):  # the network's per-value times are the same times
    np.testing.assert_array_equal(model.time_levels(noisy).per_token(), t)
    unprompted = {k: v for k, v in noisy.items() if k != "given"}
    np.testing.assert_array_equal(model.time_levels(unprompted).per_token(),
                                  jnp.broadcast_to(noisy["row_t"][:, None], t.shape))
  _, metrics = model.loss(noisy, rng=jax.random.PRNGKey(2), train=False)
  assert int(metrics["tokens"]) == int((~canvas.given).sum())


def test_unknown_sampler_for_family_is_a_clear_error(family, tokenizer):
  from dlm.errors import DlmError

  _, model, _ = family
  with pytest.raises(DlmError, match="does not sample"):
    samplers.generate(model, SamplerConfig(name="ancestral", steps=4), jax.random.PRNGKey(0),
                      _canvas(tokenizer))


def test_x0_loss_is_zero_for_a_denoiser_returning_the_clean_embeddings(family, tokenizer,
                                                                       monkeypatch):
  """The embedding (x_0) loss vanishes when the network returns e(x) exactly."""
  config, model, _ = family
  canvas = _canvas(tokenizer)
  batch = _batch(canvas, 700)
  clean = model.embedding(batch["tokens"])
  if config.model.family == "neodiff":
    monkeypatch.setattr(type(model), "denoise", lambda self, *a, **k: clean)
  else:  # x0_estimate(logits) is the CDCD expectation; make it the clean embedding
    monkeypatch.setattr(type(model), "x0_estimate", lambda self, logits: clean)
  noisy = model.corrupt(batch, jax.random.PRNGKey(3))
  _, metrics = model.loss(noisy, rng=jax.random.PRNGKey(4), train=True)
  assert float(metrics["mse"]) == 0.0
  assert int(metrics["tokens"]) > 0


@pytest.mark.parametrize("family_name", ["masked", "autoregressive"])
def test_discrete_families_never_noise_or_score_given_tokens(family_name, quickstart,
                                                             tokenizer):
  config = _config(quickstart, "quickstart.py", **{"model.family": family_name})
  model = models.build(config, tokenizer, __import__("flax").nnx.Rngs(0))
  canvas = _canvas(tokenizer, batch=4)
  batch = _batch(canvas, 600)
  given = np.asarray(canvas.given)
  for seed in range(5):
    noisy = model.corrupt(batch, jax.random.PRNGKey(seed))
    _, metrics = model.loss(noisy, train=False)
    if family_name == "masked":
      z = np.asarray(noisy["z"])
      assert (z[given] == np.asarray(batch["tokens"])[given]).all()
      assert (np.asarray(noisy["t"])[given] == 0).all()
      assert int(metrics["tokens"]) == int((~given).sum())
    else:  # next-token loss only where the target is not given
      _, scored = model.token_nll(batch)
      assert not np.asarray(scored)[given].any()
      assert int(metrics["tokens"]) == int((~given[:, 1:]).sum())


# Training and sampling feed the network the same inputs at given positions.


def _tiny_continuous(family_name):
  from flax import nnx

  from dlm.models.continuous import ContinuousConfig, ContinuousDiffusion
  from dlm.models.neodiff import NeoDiff, NeoDiffConfig
  from dlm.models.transformer import TransformerConfig

  net = TransformerConfig(vocab_size=12, width=16, depth=1, heads=2, cond_width=8,
                          head_init_std=0.1)
  if family_name == "continuous":
    return ContinuousDiffusion(net, ContinuousConfig(embed_dim=4, self_condition=1.0),
                               nnx.Rngs(0))
  return NeoDiff(net, NeoDiffConfig(embed_dim=4, num_tau=8, self_condition=1.0), nnx.Rngs(0))


@pytest.mark.parametrize("family_name", ["continuous", "neodiff"])
def test_training_and_sampling_see_the_same_inputs_at_given_positions(family_name,
                                                                      monkeypatch):
  """At given positions both paths feed the denoiser z = e(x), t = 0 and, once a previous
  estimate exists, x0_prev = e(x) (the samplers' clean embedding; training used to feed the
  network's own first-pass estimate, never trained there), and NeoDiff's time predictor e(x)."""
  from dlm.models.embedding_diffusion import EmbeddingDenoiser
  from dlm.models.neodiff import TimePredictor
  from dlm.samplers import continuous as sampler_lib
  from dlm.samplers import neodiff as neodiff_sampler_lib

  model = _tiny_continuous(family_name)
  calls = {"denoiser": [], "time": []}
  denoise, predict = EmbeddingDenoiser.__call__, TimePredictor.__call__

  def record_denoiser(self, z, x0_prev, t, *a, **k):
    calls["denoiser"].append((np.asarray(z), np.asarray(x0_prev), np.asarray(t)))
    return denoise(self, z, x0_prev, t, *a, **k)

  def record_time(self, x0_hat, *a, **k):
    calls["time"].append(np.asarray(x0_hat))
    return predict(self, x0_hat, *a, **k)

  monkeypatch.setattr(EmbeddingDenoiser, "__call__", record_denoiser)
  monkeypatch.setattr(TimePredictor, "__call__", record_time)
  given = jnp.zeros((2, 8), bool).at[:, :3].set(True).at[:, -1].set(True)
  tokens = jnp.where(given, jnp.arange(8) + 1, 11).astype(jnp.int32)
  clean = np.asarray(model.embedding(tokens))
  g = np.asarray(given)
  batch = {"tokens": jnp.where(given, tokens, 5), "segment_ids": jnp.ones_like(tokens),
           "positions": jnp.broadcast_to(jnp.arange(8), tokens.shape), "given": given}
  with jax.disable_jit():
    model.loss(model.corrupt(batch, jax.random.PRNGKey(0)), rng=jax.random.PRNGKey(1))
    assert len(calls["denoiser"]) == 2  # self-conditioning: a first pass, then the second
    train_calls = dict(denoiser=calls["denoiser"][-1], time=calls["time"])
    calls["denoiser"], calls["time"] = [], []
    cfg = SamplerConfig(name="neodiff" if family_name == "neodiff" else "ddim", steps=2)
    sample = (neodiff_sampler_lib.neodiff_sampler if family_name == "neodiff" else
              sampler_lib.continuous_sampler)
    sample(model, cfg, jax.random.PRNGKey(2), Canvas(tokens, given))
  assert len(calls["denoiser"]) == 2
  for z, x0_prev, t in (train_calls["denoiser"], calls["denoiser"][1]):
    np.testing.assert_array_equal(t[g], 0.0)
    np.testing.assert_allclose(z[g], clean[g], rtol=1e-6)
    np.testing.assert_allclose(x0_prev[g], clean[g], rtol=1e-6)
  if family_name == "neodiff":
    assert len(train_calls["time"]) == 1 and len(calls["time"]) == 2
    for x0_hat in (train_calls["time"][0], calls["time"][1]):
      np.testing.assert_allclose(x0_hat[g], clean[g], rtol=1e-6)
