"""Samplers against exact answers: a toy denoiser that returns the exact conditionals of a known
distribution over length-3 sequences."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm import samplers
from dlm.processes.schedules import MaskingSchedule
from dlm.samplers import filtering
from dlm.samplers.core import Canvas, SamplerConfig, guided
from toy_joint import CODES, LENGTH, MASK, conditional_table, joint

SCHEDULE = MaskingSchedule("linear")
# Chi-square critical value, 26 degrees of freedom, p = 0.001 (standard tables).
CHI2_26_P001 = 54.05


def _joint():
  return joint(seed=1, concentration=1.0)


def _exact_denoiser(seqs, p):
  table = conditional_table(seqs, p, floor=-1e9)
  return lambda z, t: table[(z * CODES).sum(axis=1)]


def _chi2(samples, seqs, p):
  index = {tuple(s): i for i, s in enumerate(seqs.tolist())}
  counts = np.zeros(len(seqs))
  for s in np.asarray(samples).tolist():
    counts[index[tuple(s)]] += 1
  expected = p * len(samples)
  return float(((counts - expected) ** 2 / expected).sum())


def _sample(denoise, cfg, n, seed=0, canvas=None):
  canvas = canvas or samplers.blank_canvas(n, LENGTH, MASK)
  fn = jax.jit(lambda rng, c: samplers.run(denoise, SCHEDULE, cfg, rng, c, MASK))
  return fn(jax.random.PRNGKey(seed), canvas)


@pytest.mark.parametrize("name, steps", [("random", 3), ("ancestral", 300),
                                         ("ancestral_cache", 300)])
def test_one_token_per_step_reproduces_the_joint(name, steps):
  seqs, p = _joint()
  out = _sample(_exact_denoiser(seqs, p), SamplerConfig(name=name, steps=steps), 20_000)
  assert _chi2(out.tokens, seqs, p) < CHI2_26_P001


def test_all_at_once_does_not_reproduce_the_joint():
  """The test has power: one step samples the product of the marginals."""
  seqs, p = _joint()
  out = _sample(_exact_denoiser(seqs, p), SamplerConfig(name="ancestral", steps=1), 20_000)
  assert _chi2(out.tokens, seqs, p) > 10 * CHI2_26_P001


def _random_denoiser(vocab=11, length=24, time_weight=3.0):
  """Logits depend on the visible tokens and on each token's time (so both must match)."""
  w = jax.random.normal(jax.random.PRNGKey(7), (vocab + 1, length, vocab + 1))

  def fn(z, t):
    ctx = jnp.einsum("blv,vmw->bmw", jax.nn.one_hot(z, vocab + 1), w) / 4.0
    return ctx + time_weight * t[..., None] * jnp.arange(vocab + 1) / vocab

  return fn


@pytest.mark.parametrize("block_length, grid, cfg_scale", [(0, "uniform", 0.0),
                                                           (8, "cosine", 0.0),
                                                           (12, "uniform", 1.5)])
def test_cache_gives_identical_samples_with_fewer_calls(block_length, grid, cfg_scale):
  vocab, length = 11, 24
  denoise = _random_denoiser(vocab, length)
  tokens = jnp.full((16, length), vocab, jnp.int32).at[:, 5].set(2)
  canvas = Canvas(tokens, tokens != vocab)
  outs = {}
  for name in ("ancestral", "ancestral_cache"):
    cfg = SamplerConfig(name=name, steps=96, block_length=block_length, grid=grid,
                        cfg_scale=cfg_scale)
    outs[name] = jax.jit(lambda r, c, cfg=cfg: samplers.run(denoise, SCHEDULE, cfg, r, c,
                                                            vocab))(jax.random.PRNGKey(3),
                                                                    canvas)
  plain, cached = outs["ancestral"], outs["ancestral_cache"]
  np.testing.assert_array_equal(plain.tokens, cached.tokens)
  np.testing.assert_array_equal(plain.revealed_at, cached.revealed_at)
  passes = 2 if cfg_scale else 1
  assert (plain.nfe == 96 * passes).all()
  # cached calls: exactly the distinct reveal steps of each sequence
  distinct = [len(set(r[r >= 0].tolist())) for r in np.asarray(cached.revealed_at)]
  np.testing.assert_array_equal(cached.nfe, passes * np.array(distinct))
  assert (cached.nfe < plain.nfe).all()


@pytest.mark.parametrize("name", ["ancestral", "ancestral_cache", "low_confidence", "random"])
def test_top_k_one_equals_greedy(name):
  # (Dream's orders score confidence on the filtered distribution, so there top-k = 1 changes
  # the order, not the proposals: see test_dream_proposals_with_top_k_one.)
  denoise = _random_denoiser()
  canvas = samplers.blank_canvas(8, 24, 11)
  run = lambda cfg: jax.jit(lambda r: samplers.run(denoise, SCHEDULE, cfg, r, canvas, 11))(
      jax.random.PRNGKey(0))  # noqa: E731
  top1 = run(SamplerConfig(name=name, steps=24, temperature=1.0, top_k=1))
  greedy = run(SamplerConfig(name=name, steps=24, temperature=0.0))
  np.testing.assert_array_equal(top1.tokens, greedy.tokens)
  hot = run(SamplerConfig(name=name, steps=24, temperature=1.0))
  assert (np.asarray(hot.tokens) != np.asarray(greedy.tokens)).any()


@pytest.mark.parametrize("name", samplers.names("masked"))
def test_semi_autoregressive_blocks_fill_in_order(name):
  denoise = _random_denoiser()
  canvas = samplers.blank_canvas(4, 24, 11)
  out = jax.jit(lambda r: samplers.run(
      denoise, SCHEDULE, SamplerConfig(name=name, steps=12, block_length=8), r, canvas, 11))(
          jax.random.PRNGKey(1))
  order = np.asarray(out.revealed_at).reshape(4, 3, 8)
  assert (order[:, :-1].max(axis=2) < order[:, 1:].min(axis=2)).all()
  assert (np.asarray(out.tokens) != 11).all()


@pytest.mark.parametrize("name", ["low_confidence", "ancestral"])
def test_blocks_of_a_prompt_cost_no_pass(name):
  """Blocks from the canvas start after a prompt: the prompt's whole blocks are skipped (no
  network pass, no NFE); the later blocks keep their step numbers and fill every mask."""
  calls = []

  def counting(z, t):
    jax.debug.callback(lambda: calls.append(1))
    return _random_denoiser()(z, t)

  # Rows 0 and 1 are given up to position 10 and 17: block 0 (0-7) is prompt in every row,
  # block 1 (8-15) is not (row 0 has masks there), so only block 0 is skipped.
  tokens = jnp.full((2, 24), 11, jnp.int32).at[0, :10].set(3).at[1, :17].set(3)
  canvas = Canvas(tokens, tokens != 11)
  cfg = SamplerConfig(name=name, steps=12, block_length=8, temperature=0.0,
                      blocks_from="canvas")
  out = samplers.run(counting, SCHEDULE, cfg, jax.random.PRNGKey(0), canvas, 11)
  jax.block_until_ready(out.tokens)
  assert len(calls) == 8  # 2 of 3 blocks x 4 steps
  # low_confidence: row 1 has nothing to generate in block 1 (no NFE); ancestral counts steps
  np.testing.assert_array_equal(out.nfe, [8, 4] if name == "low_confidence" else [8, 8])
  assert (np.asarray(out.tokens) != 11).all()
  assert np.asarray(out.revealed_at).max() < 12 and np.asarray(out.revealed_at)[0, 10] >= 4


@pytest.mark.parametrize("name", samplers.names("masked"))
def test_given_tokens_never_change(name):
  denoise = _random_denoiser()
  tokens = jnp.full((4, 24), 11, jnp.int32).at[:, :6].set(3).at[:, 15:18].set(7)
  canvas = Canvas(tokens, tokens != 11)
  out = jax.jit(lambda r: samplers.run(denoise, SCHEDULE, SamplerConfig(name=name, steps=8),
                                       r, canvas, 11))(jax.random.PRNGKey(2))
  got = np.asarray(out.tokens)
  assert (got[:, :6] == 3).all() and (got[:, 15:18] == 7).all() and (got != 11).all()
  assert (np.asarray(out.revealed_at)[np.asarray(canvas.given)] == -1).all()


def test_confidence_samplers_reveal_the_scheduled_number_per_step():
  denoise = _random_denoiser()
  canvas = samplers.blank_canvas(3, 24, 11)
  out = jax.jit(lambda r: samplers.run(
      denoise, SCHEDULE, SamplerConfig(name="low_confidence", steps=5), r, canvas, 11))(
          jax.random.PRNGKey(0))
  per_step = np.stack([(np.asarray(out.revealed_at) == j).sum(axis=1) for j in range(5)], 1)
  np.testing.assert_array_equal(per_step, [[5, 5, 5, 5, 4]] * 3)  # 24 = 5 + 5 + 5 + 5 + 4


def test_classifier_free_guidance():
  given = jnp.array([[True, False, False]])
  seen = []

  def denoise(z, t):  # cond when the prompt is visible, un when it is masked
    visible = (z[:, :1] != MASK)[..., None]
    seen.append(z)
    return jnp.where(visible, 2.0, 0.5) * jnp.ones(z.shape + (4,))

  fn, passes = guided(denoise, given, MASK, 1.5)
  z = jnp.array([[1, MASK, MASK]])
  np.testing.assert_allclose(fn(z, jnp.zeros((1, 3))), 0.5 + 2.5 * (2.0 - 0.5))
  assert passes == 2 and int(seen[1][0, 0]) == MASK  # the unconditional pass masks the prompt
  same, one = guided(denoise, given, MASK, 0.0)
  assert same is denoise and one == 1
  tokens = jnp.full((4, 24), 11, jnp.int32).at[:, :4].set(5)
  canvas = Canvas(tokens, tokens != 11)
  rdn = _random_denoiser()
  run = lambda w: jax.jit(lambda r: samplers.run(  # noqa: E731
      rdn, SCHEDULE, SamplerConfig(name="low_confidence", steps=8, cfg_scale=w), r, canvas,
      11))(jax.random.PRNGKey(0))
  assert (run(0.0).nfe == 8).all() and (run(2.0).nfe == 16).all()


def test_filters():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  assert jnp.isinf(filtering.top_k_filter(logits, 2)[0, 2:]).all()
  kept = jnp.isfinite(filtering.top_p_filter(logits, 0.7))[0].tolist()
  assert kept == [True, True, False, False]  # 0.5 < 0.7 <= 0.8
  assert jnp.isfinite(filtering.top_p_filter(logits, 0.1))[0].tolist() == [True, False, False,
                                                                           False]
  u = jax.random.uniform(jax.random.PRNGKey(0), (200_000,))
  draws = filtering.inverse_cdf(jnp.broadcast_to(logits, (200_000, 4)), u, 1.0)
  np.testing.assert_allclose(np.bincount(np.asarray(draws), minlength=4) / 200_000,
                             [0.5, 0.3, 0.15, 0.05], atol=0.005)
  g = filtering.gumbel_argmax(jnp.broadcast_to(logits, (200_000, 4)), jax.random.PRNGKey(1), 1.0)
  np.testing.assert_allclose(np.bincount(np.asarray(g), minlength=4) / 200_000,
                             [0.5, 0.3, 0.15, 0.05], atol=0.005)


def test_bad_sampler_settings():
  from dlm.errors import DlmError

  with pytest.raises(DlmError, match="unknown sampler 'nope'"):
    samplers.check(SamplerConfig(name="nope"), 24)
  with pytest.raises(DlmError, match="block_length=5 does not divide"):
    samplers.check(SamplerConfig(block_length=5), 24)
  with pytest.raises(DlmError, match="multiple of the 3 blocks"):
    samplers.check(SamplerConfig(block_length=8, steps=10), 24)


def test_dream_proposals_with_top_k_one():
  from dlm.samplers import confidence

  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 9))
  for order in ("maskgit_plus", "topk_margin", "entropy"):
    x0, conf = confidence._proposal(order, logits, SamplerConfig(top_k=1), jax.random.PRNGKey(1))  # pylint: disable=protected-access
    np.testing.assert_array_equal(x0, jnp.argmax(logits, -1))
    expected = {"maskgit_plus": 1.0, "topk_margin": 1.0, "entropy": 0.0}[order]
    np.testing.assert_allclose(conf, expected, atol=1e-6)


def test_float64_draws():
  enable_x64 = jax.enable_x64

  denoise = _random_denoiser()
  canvas = samplers.blank_canvas(4, 24, 11)
  with enable_x64():
    cfg = SamplerConfig(name="ancestral", steps=8, float64=True)
    samplers.check(cfg, 24)
    out = jax.jit(lambda r: samplers.run(denoise, SCHEDULE, cfg, r, canvas, 11))(
        jax.random.PRNGKey(0))
    assert (np.asarray(out.tokens) < 11).all()
    low = SamplerConfig(name="low_confidence", steps=8, float64=True)
    out = jax.jit(lambda r: samplers.run(denoise, SCHEDULE, low, r, canvas, 11))(
        jax.random.PRNGKey(0))
    assert (np.asarray(out.tokens) < 11).all()
  from dlm.errors import DlmError
  with pytest.raises(DlmError, match="jax_enable_x64"):
    samplers.check(SamplerConfig(float64=True), 24)


# Top-p ties, Dream's filter order and reveal schedule, the HTML replay's script block.


def test_top_p_keeps_the_smallest_set_when_tokens_tie():
  """A uniform 10-way distribution with p = 0.3 keeps 3 tokens (ties broken by the lower
  index), not every token tied with the cutoff."""
  logits = jnp.zeros((2, 10))
  kept = np.asarray(jnp.isfinite(filtering.top_p_filter(logits, 0.3)))
  np.testing.assert_array_equal(kept, np.arange(10)[None].repeat(2, 0) < 3)
  # Ties among the tail: [0.4, 0.2, 0.2, 0.2] with p = 0.5 keeps 0.4 and the first 0.2.
  logits = jnp.log(jnp.array([[0.2, 0.4, 0.2, 0.2]]))
  assert jnp.isfinite(filtering.top_p_filter(logits, 0.5))[0].tolist() == [True, True, False,
                                                                           False]


def test_dream_orders_filter_top_p_before_top_k():
  """p = [0.4, 0.3, 0.2, 0.1], top-k 2, top-p 0.5: Dream's order (top-p on the full
  distribution, then top-k) keeps {0, 1}; HF's (top-k, renormalise, top-p) keeps {0}."""
  from dlm.samplers import confidence

  logits = jnp.broadcast_to(jnp.log(jnp.array([0.4, 0.3, 0.2, 0.1])), (1, 4000, 4))
  hf = filtering.process(logits[:, :1], 1.0, 2, 0.5)
  dream = filtering.process(logits[:, :1], 1.0, 2, 0.5, top_p_first=True)
  assert jnp.isfinite(hf)[0, 0].tolist() == [True, False, False, False]
  assert jnp.isfinite(dream)[0, 0].tolist() == [True, True, False, False]
  cfg = SamplerConfig(top_k=2, top_p=0.5)
  rng = jax.random.PRNGKey(0)
  x0, conf = confidence._proposal("maskgit_plus", logits, cfg, rng)  # pylint: disable=protected-access
  assert set(np.unique(np.asarray(x0)).tolist()) == {0, 1}
  np.testing.assert_allclose(np.where(np.asarray(x0) == 0, 4 / 7, 3 / 7), conf, rtol=1e-5)
  _, conf = confidence._proposal("topk_margin", logits, cfg, rng)  # pylint: disable=protected-access
  np.testing.assert_allclose(conf, 1 / 7, rtol=1e-5)
  _, conf = confidence._proposal("entropy", logits, cfg, rng)  # pylint: disable=protected-access
  q = np.array([4 / 7, 3 / 7])
  np.testing.assert_allclose(conf, (q * np.log(q)).sum(), rtol=1e-5)
  x0, _ = confidence._proposal("low_confidence", logits, cfg, rng)  # pylint: disable=protected-access
  assert (np.asarray(x0) == 0).all()  # HF order: only the top token survives


def _dream_counts(m, steps):
  """Dream `generation_utils.py::_sample`: int(m (1 - s / t)) of the m still masked at each
  step on linspace(1, 1e-3, steps + 1); all that remain at the last step."""
  ts = np.linspace(1, 1e-3, steps + 1)
  counts = []
  for i in range(steps):
    k = m if i == steps - 1 else int(m * (1 - ts[i + 1] / ts[i]))
    counts.append(k)
    m -= k
  return counts


def test_dream_reveal_schedule():
  # By hand: 24 masked over 4 steps on [1, 0.75025, 0.5005, 0.25075, 0.001]:
  # int(24 * 0.24975) = 5, int(19 * 0.3329) = 6, int(13 * 0.49900) = 6, then the last 7.
  assert _dream_counts(24, 4) == [5, 6, 6, 7]
  denoise = _random_denoiser()
  tokens = jnp.full((2, 24), 11, jnp.int32).at[1, :4].set(3)  # row 1: a 4-token prompt
  canvas = Canvas(tokens, tokens != 11)

  def per_step(cfg):
    out = jax.jit(lambda r: samplers.run(denoise, SCHEDULE, cfg, r, canvas, 11))(
        jax.random.PRNGKey(0))
    at = np.asarray(out.revealed_at)
    assert (np.asarray(out.tokens) != 11).all()
    return np.stack([(at == j).sum(axis=1) for j in range(cfg.steps)], 1).tolist()

  for order in ("low_confidence", "maskgit_plus", "entropy"):
    got = per_step(SamplerConfig(name=order, steps=4, reveal="dream"))
    assert got == [[5, 6, 6, 7], _dream_counts(20, 4)], order  # per row
  assert _dream_counts(20, 4) == [4, 5, 5, 6]
  # Semi-AR blocks of 12: the schedule within each block over its 3 steps; blocks start at
  # each row's prompt end (row 1: positions 4-15, then the 8 left), or at position 0.
  got = per_step(SamplerConfig(name="low_confidence", steps=6, block_length=12, reveal="dream"))
  assert got == [_dream_counts(12, 3) * 2, _dream_counts(12, 3) + _dream_counts(8, 3)]
  got = per_step(SamplerConfig(name="low_confidence", steps=6, block_length=12, reveal="dream",
                               blocks_from="canvas"))
  assert got == [_dream_counts(12, 3) * 2, _dream_counts(8, 3) + _dream_counts(12, 3)]
  assert _dream_counts(12, 3) == [3, 4, 5]
  # The default is LLaDA's even split.
  assert per_step(SamplerConfig(name="low_confidence", steps=4))[0] == [6, 6, 6, 6]


def test_unknown_reveal_schedule_is_a_clear_error():
  from dlm.errors import DlmError

  with pytest.raises(DlmError, match="reveal"):
    SamplerConfig(name="low_confidence", reveal="fast")


def test_html_replay_escapes_closing_tags_in_its_script():
  import json

  from dlm.samplers import render

  pieces = ["a", "</script><b>x</b>", "<!--", "&amp;"]
  samples = [{"pieces": pieces, "revealed_at": [-1, 0, 1, 1], "steps": 2, "label": "</SCRIPT>"}]
  page = render.html_replay(samples)
  assert page.lower().count("</script") == 1  # only the block's own end tag
  assert "<!--" not in page
  data = page.split("const DATA = ", 1)[1].split(";\nconst slider", 1)[0]
  assert json.loads(data) == [{"pieces": pieces, "at": [-1, 0, 1, 1], "steps": 2,
                               "label": "</SCRIPT>"}]


def _llada_generate(model, row, prompt_len, steps, gen_length, block_length, mask):
  """A direct transcription of LLaDA's `generate.py::generate` (temperature 0, low-confidence
  remasking, no CFG) for one row whose generation is positions prompt_len .. + gen_length."""
  x = np.array(row)
  num_blocks = gen_length // block_length
  per_block = steps // num_blocks
  for b in range(num_blocks):
    start = prompt_len + b * block_length
    end = start + block_length
    masked = int((x[start:end] == mask).sum())  # get_num_transfer_tokens
    num_transfer = [masked // per_block + (i < masked % per_block) for i in range(per_block)]
    for i in range(per_block):
      mask_index = x == mask
      logits = np.asarray(model(jnp.asarray(x[None]), jnp.zeros((1, len(x)))))[0]
      x0 = logits.argmax(-1)
      p = np.exp(logits - logits.max(-1, keepdims=True))
      p /= p.sum(-1, keepdims=True)
      x0_p = np.take_along_axis(p, x0[:, None], -1)[:, 0]
      x0_p[end:] = -np.inf
      x0 = np.where(mask_index, x0, x)
      confidence = np.where(mask_index, x0_p, -np.inf)
      select = np.argsort(-confidence, kind="stable")[:num_transfer[i]]
      x[select] = x0[select]
  return x


def test_prompt_relative_blocks_match_llada_generate():
  # Rows with prompts of 3, 6 and 9 tokens, each followed by 12 positions to generate (blocks of
  # 4, from the row's prompt end) and given padding after them.
  vocab, length, gen, block, steps = 11, 24, 12, 4, 6
  w = _random_denoiser(vocab, length, time_weight=0.0)
  denoise = lambda z, t: w(z, t).at[..., vocab].set(-1e9)  # noqa: E731  (never [MASK])
  rows, given = [], []
  for prompt in (3, 6, 9):
    row = np.full(length, vocab, np.int32)
    row[:prompt] = np.arange(prompt) % vocab
    row[prompt + gen:] = 1
    rows.append(row)
    given.append(row != vocab)
  canvas = Canvas(jnp.asarray(np.stack(rows)), jnp.asarray(np.stack(given)))
  cfg = samplers.with_generation_length(
      SamplerConfig(name="low_confidence", steps=steps, block_length=block, temperature=0.0),
      canvas)
  assert cfg.generation_length == gen  # from the prompt end to the last mask
  out = samplers.run(denoise, SCHEDULE, cfg, jax.random.PRNGKey(0), canvas, vocab)
  for r, prompt in enumerate((3, 6, 9)):
    expected = _llada_generate(denoise, rows[r], prompt, steps, gen, block, vocab)
    np.testing.assert_array_equal(np.asarray(out.tokens)[r], expected)
  revealed = np.asarray(out.revealed_at)
  for r, prompt in enumerate((3, 6, 9)):  # block b of each row in steps 2b, 2b + 1
    blocks = revealed[r, prompt:prompt + gen].reshape(3, 4) // 2
    np.testing.assert_array_equal(blocks, np.arange(3)[:, None] * np.ones((1, 4), int))
  canvas_blocks = samplers.run(denoise, SCHEDULE, dataclasses.replace(cfg, blocks_from="canvas",
                                                                       steps=12),
                               jax.random.PRNGKey(0), canvas, vocab)
  assert (np.asarray(canvas_blocks.tokens) != np.asarray(out.tokens)).any()


def test_threshold_decoding():
  vocab, length = 11, 24
  denoise = _random_denoiser(vocab, length)
  tokens = jnp.full((4, length), vocab, jnp.int32).at[:, :4].set(3)
  canvas = Canvas(tokens, tokens != vocab)
  run = lambda cfg: jax.jit(lambda r: samplers.run(denoise, SCHEDULE, cfg, r, canvas, vocab))(
      jax.random.PRNGKey(5))  # noqa: E731
  fixed = functools.partial(SamplerConfig, name="low_confidence", steps=20, block_length=4,
                            generation_length=20)  # what samplers.generate sets
  one_per_step = run(fixed())
  never = run(fixed(threshold=1.0))
  for field in ("tokens", "revealed_at", "nfe"):  # threshold 1 is never exceeded
    np.testing.assert_array_equal(getattr(never, field), getattr(one_per_step, field))
  loose = run(fixed(threshold=0.05))
  assert (np.asarray(loose.tokens) != vocab).all()
  assert (np.asarray(loose.nfe) < 20).all()  # several tokens per step: fewer passes
  revealed = np.asarray(loose.revealed_at)[:, 4:]
  for r in range(4):  # each pass reveals at least one of the row's tokens, blocks in order
    assert len(np.unique(revealed[r])) == np.asarray(loose.nfe)[r]
    assert (np.diff(revealed[r].reshape(5, 4).max(1)) > 0).all()
  factor = run(fixed(factor=1.0))
  assert (np.asarray(factor.tokens) != vocab).all() and (np.asarray(factor.nfe) <= 20).all()
  tiny = run(fixed(factor=1e-6))
  np.testing.assert_array_equal(tiny.tokens, one_per_step.tokens)  # one per step


def test_factor_rule_counts():
  from dlm.samplers.confidence import _factor_count

  conf = jnp.array([[0.9, 0.8, 0.5, -jnp.inf], [0.2, 0.1, -jnp.inf, -jnp.inf]])
  # factor 1: thresholds 1 - 1/(n + 1) = 0.5, 0.667, 0.75 for n = 1, 2, 3 (n = 1 always)
  np.testing.assert_array_equal(_factor_count(conf, 1.0), [2, 1])
  np.testing.assert_array_equal(_factor_count(conf, 2.0), [3, 1])  # 0, 0.333, 0.5


@pytest.mark.parametrize("scan_layers, kv_heads, positions", [(False, 0, "rotary"),
                                                               (True, 2, "learned")])
def test_cached_autoregressive_decoding_equals_recomputing(scan_layers, kv_heads, positions):
  from flax import nnx

  from dlm.models.autoregressive import AutoRegressive
  from dlm.models.transformer import TransformerConfig

  cfg = TransformerConfig(vocab_size=13, width=32, depth=2, heads=4, kv_heads=kv_heads,
                          positions=positions, max_positions=24, scan_layers=scan_layers,
                          qkv_bias=True, head_init_std=0.5)
  model = _randomized(lambda: AutoRegressive(cfg, nnx.Rngs(0)), seed=3)
  tokens = jnp.full((6, 24), 12, jnp.int32).at[:, :4].set(3).at[:, 10].set(5)
  canvas = Canvas(tokens, tokens != 12)
  out = {}
  for name in ("autoregressive", "autoregressive_full"):
    cfg_s = SamplerConfig(name=name, temperature=1.0, stop_ids=(0,))
    out[name] = samplers.generate(model, cfg_s, jax.random.PRNGKey(1), canvas)
  cached, full = out["autoregressive"], out["autoregressive_full"]
  for field in ("tokens", "revealed_at", "nfe"):
    np.testing.assert_array_equal(getattr(cached, field), getattr(full, field))
  assert (np.asarray(full.tokens)[:, 10] == 5).all()
  assert len({tuple(r) for r in np.asarray(full.tokens).tolist()}) > 1


def _randomized(make, seed):
  """The module `make()` builds, every parameter N(0, 0.3^2) (initialised abstractly and drawn
  by numpy: eager initialisation costs seconds)."""
  from flax import nnx

  graphdef, state = nnx.split(nnx.eval_shape(make))
  leaves, tree = jax.tree.flatten(nnx.to_pure_dict(state))
  rng = np.random.default_rng(seed)
  values = [jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype) for x in leaves]
  return nnx.merge(graphdef, jax.tree.unflatten(tree, values))


@functools.cache
def _random_masked_net(vocab=11, length=24, **overrides):
  from flax import nnx

  from dlm.models.transformer import Transformer, TransformerConfig

  cfg = TransformerConfig(**{"vocab_size": vocab + 1, "width": 32, "depth": 2, "heads": 4,
                             "cond_width": 16, **overrides})
  return _randomized(lambda: Transformer(cfg, nnx.Rngs(0)), seed=4)


@pytest.mark.parametrize("cache, threshold, shifted", [("prefix", 0.0, False),
                                                        ("dual", 0.3, True)])
def test_kv_cache_refreshed_at_every_step_gives_the_uncached_tokens(cache, threshold, shifted):
  from dlm.samplers.confidence import cached_confidence, confidence
  from dlm.samplers.core import CachedDenoiser

  vocab, length = 11, 20
  tokens = jnp.full((3, length), vocab, jnp.int32)
  tokens = tokens.at[0, :4].set(3).at[1, :8].set(5).at[2, :4].set(7).at[2, 16:].set(1)
  canvas = Canvas(tokens, tokens != vocab)
  # Blocks of 8 from each prompt end over the longest generation (16): two blocks.
  sampling = SamplerConfig(name="low_confidence", steps=8, block_length=8, temperature=1.0,
                           threshold=threshold, generation_length=16, cache=cache)

  def sample(depth, **settings):
    net = _random_masked_net(vocab, length, depth=depth, shift_logits=shifted)  # Dream's head
    s = dataclasses.replace(sampling, **settings)
    if s.cache == "none":
      return jax.jit(lambda r: confidence("low_confidence", lambda z, t: net(z, t), s, r,
                                          canvas, vocab))(jax.random.PRNGKey(9))
    cached = CachedDenoiser(net.kv_cache, lambda z, t, p, c, m: net.cached(z, p, c, m, t),
                            shifted)
    return jax.jit(lambda r: cached_confidence("low_confidence", cached, s, r, canvas,
                                               vocab))(jax.random.PRNGKey(9))

  # One layer: a position's keys and values depend on its own token and time only, which do
  # not change outside the window within a block, so the windowed passes are exact too.
  plain = sample(1, cache="none")
  for exact in (sample(1, cache_refresh=1), sample(1)):
    for field in ("tokens", "revealed_at", "nfe"):
      np.testing.assert_array_equal(getattr(exact, field), getattr(plain, field))
  stale = sample(2)  # two layers: the cached keys and values go stale within a block
  assert (np.asarray(stale.tokens) != vocab).all()
  np.testing.assert_array_equal(np.asarray(stale.tokens)[np.asarray(canvas.given)],
                                np.asarray(tokens)[np.asarray(canvas.given)])
  if not threshold:
    np.testing.assert_array_equal(stale.nfe, plain.nfe)  # one pass per step either way


def test_a_window_against_a_fresh_cache_is_the_full_pass():
  vocab, length = 11, 20
  net = _random_masked_net(vocab, length, shift_logits=True)
  z = jax.random.randint(jax.random.PRNGKey(0), (3, length), 0, vocab)
  t = jax.random.uniform(jax.random.PRNGKey(1), (3, length))
  everything = jnp.ones((3, 1, length, length), bool)
  positions = jnp.broadcast_to(jnp.arange(length), (3, length))
  windowed = jax.jit(lambda *args: net.cached(*args))
  full, filled = windowed(z, positions, net.kv_cache(3, length), everything, t)
  np.testing.assert_allclose(full, jax.jit(lambda z, t: net(z, t))(z, t), atol=1e-5)
  part, _ = windowed(z[:, 7:12], positions[:, 7:12], filled, everything[:, :, :5], t[:, 7:12])
  np.testing.assert_allclose(part[:, 1:], full[:, 8:12], atol=1e-5)  # shifted: from 7
