"""CCDD (dlm/models/ccdd.py) and its discrete channel, GIDD (dlm/processes/gidd.py)."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dlm import config as config_lib
from dlm import models, samplers
from dlm.errors import DlmError
from dlm.models import ccdd, encoders
from dlm.processes import gaussian
from dlm.processes.gidd import GiddProcess
from dlm.processes.masked import MaskedProcess
from dlm.processes.schedules import MaskingSchedule
from dlm.samplers import ccdd as ccdd_sampler
from dlm.train import loop
from dlm.train import restore

import tiny_fit  # noqa: E402  (tests/)

ROOT = pathlib.Path(__file__).resolve().parents[1]
V = 12
MASK = 11


def _inputs(seed=0, batch=4, length=16, p_u=0.0, schedule=MaskingSchedule("linear")):
  process = GiddProcess(schedule, MASK, V, p_uniform=p_u)
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  x = jax.random.randint(k[0], (batch, length), 0, V - 1)
  t = jnp.broadcast_to(jax.random.uniform(k[1], (batch, 1), minval=0.05, maxval=0.95),
                       (batch, length))
  scored = jax.random.uniform(k[2], (batch, length)) < 0.9
  z = process.forward_sample(k[3], x, t, scored)
  logits = jax.random.normal(jax.random.PRNGKey(seed + 100), (batch, length, V)) * 2
  return process, x, t, scored, z, logits


def test_gidd_without_uniform_noise_is_the_masked_nelbo():
  process, x, t, scored, z, logits = _inputs()
  masked = MaskedProcess(MaskingSchedule("linear"), MASK, V)
  expected = masked.nelbo(masked.log_prob_of(logits, x), z, t, scored)
  got = process.nelbo(logits, x, z, t, scored)
  assert bool(((z == MASK) & scored).any())
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_gidd_weights_match_the_closed_forms():
  """GIDD's closed forms (its `GiddLoss.get_weights`, alpha = 1 - t, gamma = 1)."""
  process = GiddProcess(MaskingSchedule("linear", eps=0.0), MASK, V, p_uniform=0.2)
  t = jnp.linspace(0.05, 0.95, 7)
  w_x, w_m, w_u = process._weights(t)
  c = process.b * np.sqrt(t * (1 - t))
  dc = 0.5 * (1 - 2 * t) / (t * (1 - t)) * c
  n = V - 1
  np.testing.assert_allclose(w_m, 1 / ((1 - t) * t), rtol=1e-4)
  np.testing.assert_allclose(w_u, (c + (1 - t) * dc) / ((1 - t) * c), rtol=1e-4)
  np.testing.assert_allclose(w_x, (c + (1 - t) * dc) / n / ((1 - t) * (1 - t + c / n)),
                             rtol=1e-4)


def test_gidd_marginal_and_samples():
  process = GiddProcess(MaskingSchedule("linear"), MASK, V, p_uniform=0.3)
  t = jnp.full((1, 20000), 0.5)
  x = jnp.full((1, 20000), 3)
  q = process.marginal(jax.nn.one_hot(x[:, :1], V), t[:, :1])[0, 0]
  assert abs(float(q.sum()) - 1) < 1e-6
  # At t = 1/2 the uniform component carries probability p_u (the definition of B).
  assert abs((V - 1) * float(q[4]) - 0.3) < 1e-5
  z = process.forward_sample(jax.random.PRNGKey(0), x, t, jnp.ones_like(x, bool))
  freq = np.bincount(np.asarray(z[0]), minlength=V) / z.size
  np.testing.assert_allclose(freq, np.asarray(q), atol=0.012)


@pytest.mark.parametrize("p_u", [0.0, 0.2])
def test_gidd_transition_kernel_is_consistent(p_u):
  """sum_v q(z_t | z_s = v) q_s(v | x) = q_t(z_t | x): the kernel behind `posterior`."""
  process = GiddProcess(MaskingSchedule("linear"), MASK, V, p_uniform=p_u)
  x = jax.nn.one_hot(jnp.array([[2]]), V)
  for t, s in [(0.8, 0.5), (0.4, 0.1), (0.95, 0.9)]:
    tt, ss = jnp.full((1, 1), t), jnp.full((1, 1), s)
    q_s, q_t = process.marginal(x, ss)[0, 0], process.marginal(x, tt)[0, 0]
    a_t, m_t, u_t = process._parts(tt)
    a_s, m_s, u_s = process._parts(ss)
    ratio = a_t / a_s
    for zt in range(V):
      leak = (m_t - ratio * m_s) if zt == MASK else (u_t - ratio * u_s)
      kernel = ratio * (jnp.arange(V) == zt) + leak
      np.testing.assert_allclose(float((kernel.reshape(-1) * q_s).sum()), float(q_t[zt]), rtol=1e-5)


def test_gidd_posterior_without_uniform_noise_is_mdlm():
  process = GiddProcess(MaskingSchedule("linear"), MASK, V)
  x_hat = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), (1, 2, V)).at[..., MASK]
                         .set(-jnp.inf))
  z_t = jnp.array([[MASK, 4]])
  t, s = jnp.full((1, 2), 0.7), jnp.full((1, 2), 0.3)
  post = process.posterior(x_hat, z_t, t, s)
  a = process.schedule.alpha
  reveal = float((a(0.3) - a(0.7)) / (1 - a(0.7)))
  np.testing.assert_allclose(float(post[0, 0, MASK]), 1 - reveal, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(post[0, 0, :MASK]), reveal * np.asarray(x_hat[0, 0, :MASK]),
                             rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(np.asarray(post[0, 1]), np.eye(V)[4], atol=1e-6)


def test_z_posterior_step_matches_its_closed_form():
  """VP-linear (z_t = sqrt(1 - t) z0 + sqrt(t) eps): q(z_s | z_t, z0) in closed form."""
  schedule = gaussian.GaussianSchedule("linear")
  k = jax.random.split(jax.random.PRNGKey(3), 3)
  z_t, z0 = jax.random.normal(k[0], (2, 5, 4)), jax.random.normal(k[1], (2, 5, 4))
  t, s = jnp.full((2, 5), 0.6), jnp.full((2, 5), 0.25)
  mean, var = gaussian.posterior(z_t, z0, t, s, schedule)
  a_ts2 = (1 - 0.6) / (1 - 0.25)  # alpha_{t|s}^2
  v_ts = 1 - a_ts2
  exp_mean = np.sqrt(a_ts2) * 0.25 / 0.6 * z_t + np.sqrt(1 - 0.25) * v_ts / 0.6 * z0
  np.testing.assert_allclose(np.asarray(mean), np.asarray(exp_mean), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(var), v_ts * 0.25 / 0.6, rtol=1e-5)
  # A DDPM step's draws have that mean and variance.
  draws = jax.vmap(lambda r: gaussian.ddpm_step(r, z_t, z0, t, s, schedule))(
      jax.random.split(k[2], 4000))
  np.testing.assert_allclose(np.asarray(draws.mean(0)), np.asarray(exp_mean), atol=0.04)
  np.testing.assert_allclose(float(draws.var(0).mean()), v_ts * 0.25 / 0.6, rtol=0.05)


TINY_BERT = encoders.BertConfig(vocab_size=V, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32,
                                max_position_embeddings=32)


def _tiny_model(seed=0, p_u=0.0, **overrides):
  from dlm.models.transformer import TransformerConfig

  net = TransformerConfig(vocab_size=V, width=32, depth=2, heads=2, cond_width=16,
                          head_init_std=0.1)
  process = GiddProcess(MaskingSchedule("linear"), MASK, V, p_uniform=p_u)
  cfg = ccdd.CCDDConfig(latent_dim=8, p_uniform=p_u, **overrides)
  model = ccdd.CCDD(net, process, cfg, TINY_BERT, nnx.Rngs(seed))
  # Random "pretrained" encoder weights, so that z0 carries information about the tokens.
  tiny_fit.randomize_encoder(model.encoder, seed + 7, 0.3)
  # Non-zero z modulation and head, so that guidance and the z channel matter.
  model.z_modulation[...] = jax.random.normal(jax.random.PRNGKey(5), model.z_modulation.shape)
  return model


def test_guidance_with_w_one_is_the_conditional_prediction():
  model = _tiny_model()
  k = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.randint(k[0], (2, 10), 0, V)
  z = jax.random.normal(k[1], (2, 10, 8))
  t = jnp.full((2, 10), 0.5)
  seg, pos = jnp.ones((2, 10), jnp.int32), jnp.broadcast_to(jnp.arange(10), (2, 10))
  cond, z_hat = model.denoise(x, z, t, t, seg, pos)
  got, got_z, passes = ccdd_sampler.guided_outputs(model, x, z, t, t, 1.0)
  assert passes == 1
  np.testing.assert_array_equal(np.asarray(got), np.asarray(cond))
  np.testing.assert_array_equal(np.asarray(got_z), np.asarray(z_hat))
  un, _ = model.denoise(x, jnp.zeros_like(z), t, t, seg, pos)
  w2, _, passes = ccdd_sampler.guided_outputs(model, x, z, t, t, 2.0)
  assert passes == 2
  real = np.arange(V) != MASK
  np.testing.assert_allclose(np.asarray(w2)[..., real], np.asarray(2 * cond - un)[..., real],
                             rtol=1e-5, atol=1e-5)
  assert not np.allclose(np.asarray(un)[..., real], np.asarray(cond)[..., real])
  assert np.all(np.isneginf(np.asarray(w2)[..., MASK]))


@pytest.mark.parametrize("weighting, p_u, prompt", [
    ("elbo", 0.0, 0), ("dynamic", 0.0, 0), ("dynamic", 0.2, 3)])
def test_tiny_ccdd_learns_and_keeps_its_encoder(weighting, p_u, prompt):
  model = _tiny_model(p_drop_z=0.0, p_u=p_u, loss_weighting=weighting)
  x = jnp.tile(jnp.arange(10) % (V - 1), (8, 1))
  batch = {"tokens": x, "segment_ids": jnp.ones_like(x), "positions": jnp.broadcast_to(
      jnp.arange(10), x.shape), "given": jnp.zeros(x.shape, bool).at[:, :prompt].set(True)}
  _, losses, metrics, params = tiny_fit.fit(model, batch, 60)
  assert np.isfinite(losses).all()
  assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]), losses
  assert float(metrics["mse"]) > 0
  # Encoder weights are `Frozen` variables: not in the parameters the optimizer saw.
  assert not any("encoder" in str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])


@pytest.mark.parametrize("p_u", [0.0, 0.2])
def test_dynamic_weighting_is_the_released_codes(p_u):
  """CCDD `loss.py::get_weights` with `loss_weighting: dynamic`, written out: 2 on [MASK], 1
  on another token, B / V exp(gamma/2 sigmoid(-t)) on x itself, clipped to [0, 2]; it trains
  the token channel while the reported nelbo stays the bound."""
  process, x, t, scored, z, logits = _inputs(p_u=p_u)
  b = 2.0**process.gamma * p_u / (1 - p_u)
  t_ = np.asarray(t, np.float64)
  want = np.where(np.asarray(z) == np.asarray(x),
                  b / V * np.exp(process.gamma / 2 / (1 + np.exp(t_))),
                  np.where(np.asarray(z) == MASK, 2.0, 1.0)).clip(0, 2)
  np.testing.assert_allclose(np.asarray(process.dynamic_weight(x, z, t)), want, rtol=1e-6)
  model = _tiny_model(p_u=p_u, loss_weighting="dynamic")
  batch = {"tokens": x[:, :10], "segment_ids": jnp.ones_like(x[:, :10]),
           "positions": jnp.broadcast_to(jnp.arange(10), x[:, :10].shape),
           "given": jnp.zeros(x[:, :10].shape, bool)}
  noisy = model.corrupt(batch, jax.random.PRNGKey(1))
  trained, metrics = model.loss(noisy, rng=jax.random.PRNGKey(2))
  elbo_model = _tiny_model(p_u=p_u)
  bound, elbo_metrics = elbo_model.loss(noisy, rng=jax.random.PRNGKey(2))
  assert float(metrics["nelbo"]) == pytest.approx(float(elbo_metrics["nelbo"]), rel=1e-6)
  assert float(trained) != pytest.approx(float(bound), rel=1e-3)


def test_latents_slice_then_standardise_as_the_released_code_or_the_other_way():
  x = jnp.tile(jnp.arange(10) % (V - 1), (2, 1))
  seg = jnp.ones_like(x)
  first, full = (_tiny_model(reduce=r) for r in ("slice_first", "slice"))
  h = first.encoder(x, seg)
  np.testing.assert_allclose(first.latents(x, seg), ccdd.standardize(h[..., :8]), atol=1e-6)
  np.testing.assert_allclose(full.latents(x, seg), ccdd.standardize(h)[..., :8], atol=1e-6)
  z = np.asarray(first.latents(x, seg))  # each token's channels: mean 0, variance 1
  np.testing.assert_allclose(z.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(z.var(-1), 1.0, atol=1e-3)


@pytest.mark.parametrize("when_dropped", [True, False])
def test_rows_without_z_train_the_z_head_only_if_asked(when_dropped):
  model = _tiny_model(p_drop_z=0.999, z_loss_when_dropped=when_dropped)
  x = jnp.tile(jnp.arange(10) % (V - 1), (4, 1))
  batch = {"tokens": x, "segment_ids": jnp.ones_like(x), "positions": jnp.broadcast_to(
      jnp.arange(10), x.shape), "given": jnp.zeros(x.shape, bool).at[:, :3].set(True)}
  noisy = model.corrupt(batch, jax.random.PRNGKey(1))
  assert bool(noisy["drop_z"].all())
  _, train = model.loss(noisy, rng=jax.random.PRNGKey(2))
  _, evaluation = model.loss(noisy, train=False)  # evaluation never drops z
  assert (float(train["mse"]) > 0) == when_dropped and float(evaluation["mse"]) > 0


def test_sampler_keeps_given_tokens_and_fills_the_rest():
  model = _tiny_model()
  given = jnp.zeros((3, 12), bool).at[:, :4].set(True)
  tokens = jnp.where(given, 5, MASK)
  canvas = samplers.Canvas(tokens.astype(jnp.int32), given)
  for name, w in (("ccdd", 1.0), ("ccdd_ddim", 1.5)):
    out = samplers.generate(model, samplers.SamplerConfig(name=name, steps=6, z_guidance=w),
                            jax.random.PRNGKey(0), canvas)
    got = np.asarray(out.tokens)
    assert (got[:, :4] == 5).all() and (got != MASK).all()
    assert int(out.nfe[0]) == (6 if w == 1.0 else 12)


@pytest.fixture(scope="module")
def ccdd_run(quickstart, tmp_path_factory):
  """Three steps of configs/ccdd.py at toy size with the real all-MiniLM-L6-v2 encoder."""
  workdir = str(tmp_path_factory.mktemp("ccdd"))
  config = config_lib.from_file(str(ROOT / "configs/ccdd.py"), **{
      "data.data_dir": quickstart.data.data_dir, "model.width": 32, "model.depth": 2,
      "model.cond_width": 16, "data.seq_len": 32, "train.batch_size": 8, "train.steps": 3,
      "train.eval_batches": 1, "train.progress": False, "ccdd.latent_dim": 8,
      "ccdd.reduce": "pca", "ccdd.pca_rows": 16, "train.async_checkpoint": False})
  result = loop.train(config, workdir)
  return workdir, result


def test_ccdd_trains_with_the_pretrained_encoder_and_samples(ccdd_run):
  workdir, result = ccdd_run
  assert np.isfinite(result["eval/bits_per_token"]) and result["eval/mse"] > 0
  config, tokenizer, model, _ = restore.load(workdir)
  assert json.loads(config.ccdd.encoder_arch)["hidden_size"] == 384
  reference, _ = encoders.load_encoder(encoders.default_model_dir())
  np.testing.assert_array_equal(np.asarray(model.encoder.embeddings.word[...]),
                                np.asarray(reference.embeddings.word[...]))
  # The PCA latents of training text are standardised (unit variance per channel, roughly).
  ids = jnp.asarray(tokenizer.encode("Return the number of items in the sequence. " * 4)[:32])
  z0 = model.latents(ids[None], jnp.ones((1, ids.shape[0]), jnp.int32))
  assert 0.2 < float(z0.std()) < 3.0
  out = samplers.generate(model, samplers.SamplerConfig(name="ccdd", steps=4),
                          jax.random.PRNGKey(0), samplers.blank_canvas(2, 16, tokenizer.mask_id))
  assert (np.asarray(out.tokens) != tokenizer.mask_id).all()


def test_ccdd_needs_the_encoders_tokenizer(quickstart, tokenizer):
  config = config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"), **{
      "data.data_dir": quickstart.data.data_dir, "model.family": "ccdd",
      "model.time_conditioning": "adaln_zero"})
  with pytest.raises(DlmError, match="encoder's own tokenizer"):
    nnx.eval_shape(lambda: models.build(config, tokenizer, nnx.Rngs(0)))


# Bugs: NaN gradients at t = 0 / 1, times on the interval's ends, gamma outside (0, 2].


@pytest.mark.parametrize("p_u", [0.0, 0.2])
def test_gidd_nelbo_gradient_is_finite_at_times_zero_and_one(p_u):
  """Given positions sit at t = 0 (not scored); t = 1 exactly is reachable too. The weight's
  derivative dc/dt is infinite there, which used to reach the gradient as 0 * inf = NaN."""
  process = GiddProcess(MaskingSchedule("linear"), MASK, V, p_uniform=p_u)
  k = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.randint(k[0], (2, 6), 0, V - 1)
  t = jnp.array([[0.0, 0.0, 1.0, 1.0, 0.5, 0.3]] * 2)
  scored = jnp.array([[False, True, False, True, True, True]] * 2)
  z = process.forward_sample(k[1], x, t, scored)
  logits = jax.random.normal(k[2], (2, 6, V))
  value, grad = jax.value_and_grad(lambda l: process.nelbo(l, x, z, t, scored).sum())(logits)
  assert np.isfinite(float(value))
  assert np.isfinite(np.asarray(grad)).all()
  # Positions strictly inside (0, 1) are unaffected and still learn.
  assert np.abs(np.asarray(grad)[:, 4:]).max() > 0


@pytest.mark.parametrize("weighting, p_u", [("elbo", 0.0), ("dynamic", 0.2)])
def test_ccdd_gradient_is_finite_with_given_tokens(weighting, p_u):
  model = _tiny_model(p_drop_z=0.0, p_u=p_u, loss_weighting=weighting)
  x = jnp.tile(jnp.arange(10) % (V - 1), (4, 1))
  batch = {"tokens": x, "segment_ids": jnp.ones_like(x), "positions": jnp.broadcast_to(
      jnp.arange(10), x.shape), "given": jnp.zeros(x.shape, bool).at[:, :3].set(True)}
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_fn(p):
    m = nnx.merge(graphdef, p, rest)
    total, _ = m.loss(m.corrupt(batch, jax.random.PRNGKey(1)), rng=jax.random.PRNGKey(2))
    return total

  value, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
  assert np.isfinite(float(value))
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
  assert any(np.abs(np.asarray(g)).max() > 0 for g in leaves)


@pytest.mark.parametrize("antithetic", [True, False])
def test_gidd_times_stay_inside_the_unit_interval(antithetic, monkeypatch):
  """CCDD draws t in (eps, 1 - eps), eps = 1e-4 (official `diffusion_process.py`). The draw
  u0 + i / B mod 1 used to return 0.0 exactly when u0 = 1 - i / B (here u0 = 3/4, B = 4), and
  a plain uniform draw returns 0.0 too."""
  draw = 0.75 if antithetic else 0.0
  monkeypatch.setattr(jax.random, "uniform",
                      lambda key, shape=(), *a, **k: jnp.full(shape, draw, jnp.float32))
  process = GiddProcess(MaskingSchedule("linear"), MASK, V, antithetic=antithetic)
  t = np.asarray(process.sample_time(jax.random.PRNGKey(0), 4))
  assert t.min() >= 1e-4 and t.max() <= 1 - 1e-4, t
  if antithetic:  # still stratified: evenly spaced over the interval
    np.testing.assert_allclose(np.diff(np.sort(t)), (1 - 2e-4) / 4, rtol=1e-5)


@pytest.mark.parametrize("gamma", [0.0, -1.0, 2.5, 4.0])
def test_gidd_rejects_gamma_outside_zero_two(gamma):
  with pytest.raises(DlmError, match="ccdd.gamma"):
    GiddProcess(MaskingSchedule("linear"), MASK, V, p_uniform=0.2, gamma=gamma)


def test_gidd_accepts_gamma_two():
  process = GiddProcess(MaskingSchedule("linear", eps=0.0), MASK, V, p_uniform=0.2, gamma=2.0)
  t = jnp.linspace(0.05, 0.95, 5)
  _, w_m, w_u = process._weights(t)
  np.testing.assert_allclose(w_m, 1 / ((1 - t) * t), rtol=1e-4)
  assert np.all(np.asarray(w_u) >= 0)
