"""Cosmos (dlm/models/cosmos.py): the tan-d schedule, the autoencoder, latent statistics, and
the two training stages through `loop.train` with a one-layer encoder in all-MiniLM-L6-v2's
layout and vocabulary."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dlm import config as config_lib
from dlm import sharding, samplers
from dlm.errors import DlmError
from dlm.models import cosmos, encoders
from dlm.processes import gaussian
from dlm.train import batches, loop, pretrained, restore

import tiny_fit  # noqa: E402  (tests/)
from tiny_bert import write as write_tiny_bert  # noqa: E402  (tests/)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_tan_d_schedule():
  for d in (5.0, 7.0):
    s = gaussian.GaussianSchedule("tan_d", d=d)
    t = jnp.linspace(0.0, 1.0, 101)
    a, sig = s.alpha(t), s.sigma(t)
    np.testing.assert_allclose(np.asarray(a**2 + sig**2), 1.0, atol=1e-6)
    assert float(a[0]) == 1.0 and float(sig[0]) == 0.0
    assert abs(float(a[-1])) < 1e-6 and abs(float(sig[-1]) - 1.0) < 1e-6
    inner = np.asarray(t[1:-1])
    expected = 1 / np.sqrt(1 + d**2 * np.tan(np.pi * inner / 2) ** 2)
    np.testing.assert_allclose(np.asarray(a[1:-1]), expected, rtol=1e-4, atol=1e-6)
    assert np.all(np.diff(np.asarray(a)) <= 1e-7)  # monotone


V, L = 40, 16
TINY_BERT = encoders.BertConfig(vocab_size=V, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32,
                                max_position_embeddings=32)


def _tiny_autoencoder(**overrides):
  cfg = cosmos.AutoencoderConfig(vocab_size=V, seq_len=L, num_latents=L, latent_dim=16,
                                 width=32, depth=1, heads=2, **overrides)
  model = cosmos.CosmosAutoencoder(cfg, TINY_BERT, nnx.Rngs(0))
  tiny_fit.randomize_encoder(model.encoder, 7, 0.5)
  return model


def test_autoencoder_without_augmentations_reconstructs_its_batch():
  model = _tiny_autoencoder(mask_share=1.0, mask_p=0.0, noise_delta=1.0, latent_dropout=0.0)
  x = jax.random.randint(jax.random.PRNGKey(1), (8, L), 0, V)
  batch = {"tokens": x, "segment_ids": jnp.ones_like(x),
           "positions": jnp.broadcast_to(jnp.arange(L), x.shape)}
  m, _, _, _ = tiny_fit.fit(model, batch, 300)
  _, metrics = m.loss(m.corrupt(batch, jax.random.PRNGKey(0)), train=False)
  accuracy = float(metrics["accuracy"] / metrics["tokens"])
  assert accuracy > 0.95, accuracy


def test_augmentations_change_the_training_pass_only():
  model = _tiny_autoencoder()
  x = jax.random.randint(jax.random.PRNGKey(1), (4, L), 0, V)
  batch = {"tokens": x, "segment_ids": jnp.ones_like(x),
           "positions": jnp.broadcast_to(jnp.arange(L), x.shape)}
  noisy = model.corrupt(batch, jax.random.PRNGKey(0))
  assert noisy["aug_masked_rows"].tolist() == [True, True, False, False]
  keep = float(noisy["aug_latent_keep"].mean())
  assert 0.45 < keep < 0.75  # latent dropout p = 0.4
  train_loss = model.loss(noisy, train=True)[0]
  eval_a, eval_b = (model.loss(model.corrupt(batch, jax.random.PRNGKey(k)), train=False)[0]
                    for k in (1, 2))
  assert float(eval_a) == float(eval_b) != float(train_loss)


def test_latent_statistics_standardise():
  rng = np.random.default_rng(0)
  z = rng.normal(3.0, 2.5, (64, 4, 8)) * rng.uniform(0.5, 2, (4, 8))
  mean, std = cosmos.latent_statistics(z)
  standard = (z - mean) / std
  np.testing.assert_allclose(standard.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(standard.std(0), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def two_stages(quickstart, tmp_path_factory):
  """Both stages of configs/cosmos.py at toy size: 3 autoencoder steps, then 2 diffusion steps."""
  root = tmp_path_factory.mktemp("cosmos")
  # A one-layer random encoder in MiniLM's layout and vocabulary: the real one is loaded and
  # trained beside in tests/test_ccdd.py; here it would only make the programs slower to build.
  encoder = write_tiny_bert(root / "encoder", encoders.BertConfig(
      vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
      intermediate_size=32, max_position_embeddings=64, type_vocab_size=2))
  small = {"data.data_dir": quickstart.data.data_dir, "data.seq_len": 32,
           "cosmos.encoder": str(encoder),
           "train.batch_size": 8, "train.eval_batches": 1, "train.progress": False,
           "train.async_checkpoint": False, "cosmos.num_latents": 8, "cosmos.latent_dim": 16,
           "cosmos.ae_width": 32, "cosmos.ae_depth": 1, "cosmos.stats_rows": 16}
  ae_dir, lat_dir = str(root / "ae"), str(root / "latent")
  ae_result = loop.train(config_lib.from_file(
      str(ROOT / "configs/cosmos.py:autoencoder"), **small, **{"train.steps": 3}), ae_dir)
  lat_result = loop.train(config_lib.from_file(
      str(ROOT / "configs/cosmos.py:diffusion"), **small, **{
          "train.steps": 2, "model.width": 32, "model.depth": 3,
          "cosmos.autoencoder_workdir": ae_dir}), lat_dir)
  return ae_dir, lat_dir, ae_result, lat_result


def test_two_stage_training_and_sampling(two_stages):
  ae_dir, lat_dir, ae_result, lat_result = two_stages
  assert np.isfinite(ae_result["eval/ce"]) and ae_result["eval/mse"] > 0
  assert np.isfinite(lat_result["eval/loss"])
  config, tokenizer, model, _ = restore.load(lat_dir, which="params")
  _, _, ae, _ = restore.load(ae_dir, which="ema")
  # The frozen autoencoder is the stage-1 model, unchanged by stage 2.
  got = pretrained.flat(jax.device_get(nnx.to_pure_dict(nnx.state(model.autoencoder))))
  want = pretrained.flat(jax.device_get(nnx.to_pure_dict(nnx.state(ae))))
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  # The stored statistics standardise the latents of the rows they came from.
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  it = batches.train_batches(config, tokenizer, mesh)
  rows = [it.next_local() for _ in range(2)]
  it.close()
  z = np.concatenate([np.asarray(model.normalize(model.autoencoder.latents(
      r["tokens"], r["segment_ids"]))) for r in rows])
  assert z.shape == (16, 8, 16)
  np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-3)
  np.testing.assert_allclose(z.std(0), 1.0, atol=1e-3)
  out = samplers.generate(model, samplers.SamplerConfig(name="cosmos_sde", steps=5),
                          jax.random.PRNGKey(0), samplers.blank_canvas(2, 32, tokenizer.mask_id))
  # The default readout decodes the last step's mean: no extra x0 pass, 5 passes.
  assert out.tokens.shape == (2, 32) and int(out.nfe[0]) == 5
  with pytest.raises(DlmError, match="exactly 32 tokens"):
    samplers.generate(model, samplers.SamplerConfig(name="cosmos_sde", steps=5),
                      jax.random.PRNGKey(0), samplers.blank_canvas(2, 16, tokenizer.mask_id))
  _, _, ae_model, _ = restore.load(ae_dir)
  with pytest.raises(DlmError, match="does not generate text"):
    samplers.generate(ae_model, samplers.SamplerConfig(name="cosmos_sde", steps=5),
                      jax.random.PRNGKey(0), samplers.blank_canvas(2, 32, tokenizer.mask_id))


def test_diffusion_stage_needs_an_autoencoder(quickstart, tmp_path):
  config = config_lib.from_file(str(ROOT / "configs/cosmos.py:diffusion"), **{
      "data.data_dir": quickstart.data.data_dir, "train.progress": False, "train.steps": 1})
  with pytest.raises(DlmError, match="autoencoder_workdir"):
    loop.train(config, str(tmp_path / "x"))


# The score network's long skips and the sampler's readout.


def _tiny_diffusion(depth=4, seed=0):
  from dlm.models.transformer import TransformerConfig

  ae_cfg = cosmos.AutoencoderConfig(vocab_size=V, seq_len=L, num_latents=4, latent_dim=8,
                                    width=32, depth=1, heads=2)
  net = TransformerConfig(vocab_size=V, width=16, depth=depth, heads=2,
                          time_conditioning="none")
  model = cosmos.CosmosDiffusion(ae_cfg, TINY_BERT, net, gaussian.GaussianSchedule("tan_d", d=5.0),
                                 0.5, 0.05, nnx.Rngs(seed))
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), 3)
  model.net.out[...] = jax.random.normal(keys[0], model.net.out.shape)  # non-zero x0
  model.net.sc_proj[...] = jax.random.normal(keys[1], model.net.sc_proj.shape)
  return model


def test_score_network_skips_carry_each_first_half_block_input(monkeypatch):
  """Official `architecture/score_estimator.py`: the first half stores each block's input,
  before its time and self-conditioning terms; the second half adds the popped skip, then those
  terms, then runs the block. So the embedded noisy latent reaches the last block."""
  from dlm.models.transformer import Block

  model = _tiny_diffusion(depth=4)
  net = model.net
  k = jax.random.split(jax.random.PRNGKey(3), 3)
  z_t, x0_prev = jax.random.normal(k[0], (2, 4, 8)), jax.random.normal(k[1], (2, 4, 8))
  outs = [jax.random.normal(jax.random.fold_in(k[2], i), (2, 4, 16)) for i in range(4)]
  seen = []

  def fake_block(self, x, *args, **kwargs):  # records its input, returns a known output
    seen.append(np.asarray(x))
    return outs[len(seen) - 1]

  monkeypatch.setattr(Block, "__call__", fake_block)
  net(z_t, jnp.full((2,), 0.5), x0_prev)
  assert len(seen) == 4
  embedded = np.asarray(z_t @ net.z_in[...] + net.pos[None])
  # time_proj starts at zero, so each block's extra input is the self-conditioning term.
  extra = [np.asarray(x0_prev @ net.sc_proj[i]) for i in range(4)]
  o = [np.asarray(x) for x in outs]
  expected = [embedded + extra[0], o[0] + extra[1], o[1] + o[0] + extra[2],
              o[2] + embedded + extra[3]]
  for i, (got, want) in enumerate(zip(seen, expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"block {i}")


def _record_sampling(model, monkeypatch, name, readout, steps=3):
  calls, decoded = [], []
  x0_fn, decode_fn = cosmos.CosmosDiffusion.denoise, cosmos.CosmosDiffusion.decode

  def x0(self, z_t, t, x0_prev):
    out = x0_fn(self, z_t, t, x0_prev)
    calls.append((np.asarray(z_t), np.asarray(t), np.asarray(out)))
    return out

  def decode(self, z_norm, length):
    decoded.append(np.asarray(z_norm))
    return decode_fn(self, z_norm, length)

  monkeypatch.setattr(cosmos.CosmosDiffusion, "denoise", x0)
  monkeypatch.setattr(cosmos.CosmosDiffusion, "decode", decode)
  cfg = samplers.SamplerConfig(name=name, steps=steps, readout=readout)
  canvas = samplers.blank_canvas(2, L, V - 1)
  with jax.disable_jit():
    out = samplers.generate(model, cfg, jax.random.PRNGKey(0), canvas)
  return out, calls, decoded


@pytest.mark.parametrize("name", ["cosmos_sde", "cosmos_ddim"])
def test_cosmos_mean_readout_decodes_the_last_steps_mean(name, monkeypatch):
  """Official `EulerDiffEqSolver`: the last Euler-Maruyama step's x_mean (no noise) at t_min
  is decoded; no extra x0 pass. `steps` passes, NFE = steps."""
  model = _tiny_diffusion()
  out, calls, decoded = _record_sampling(model, monkeypatch, name, "mean")
  assert len(calls) == 3 and len(decoded) == 1
  np.testing.assert_array_equal(np.asarray(out.nfe), 3)
  z, t, x0 = calls[-1]
  t = np.broadcast_to(t[:, None], z.shape[:2])
  s = np.full_like(t, model.t_min)
  if name == "cosmos_ddim":
    want = gaussian.ddim_step(z, x0, t, s, model.schedule)
  else:
    want = gaussian.euler_step(None, z, x0, t, s, model.schedule, sde=True, add_noise=False)
  np.testing.assert_allclose(decoded[0], np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["cosmos_sde", "cosmos_ddim"])
def test_cosmos_x0_readout_decodes_an_extra_x0_pass(name, monkeypatch):
  model = _tiny_diffusion()
  out, calls, decoded = _record_sampling(model, monkeypatch, name, "x0")
  assert len(calls) == 4 and len(decoded) == 1
  np.testing.assert_array_equal(np.asarray(out.nfe), 4)
  np.testing.assert_allclose(calls[-1][1], model.t_min, rtol=1e-6)
  np.testing.assert_array_equal(decoded[0], calls[-1][2])
  # ddim is deterministic: both readouts follow the same trajectory, and differ only at the end.
  if name == "cosmos_ddim":
    _, mean_calls, mean_decoded = _record_sampling(model, monkeypatch, name, "mean")
    for a, b in zip(calls[:3], mean_calls):
      np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(decoded[0], mean_decoded[0])


def test_unknown_readout_is_a_clear_error():
  with pytest.raises(DlmError, match="readout"):
    samplers.SamplerConfig(name="cosmos_sde", readout="last")
