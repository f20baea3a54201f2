"""Conditional (source -> target) data: stdlib summarize pairs, pair rows, prompts, BLEU."""

import inspect
import json
import pathlib
import textwrap

import jax
import numpy as np
import pytest

from dlm import config as config_lib
from dlm import sharding, textmetrics
from dlm.data import __main__ as data_main
from dlm.data import inputs, pipeline, pyextract, stdlib_builder
from dlm.data.tokenizer import Tokenizer
from dlm.errors import DlmError
from dlm.train import batches

ROOT = pathlib.Path(__file__).resolve().parents[1]

MODULE = '''\
"""A module docstring is not a pair."""

import functools


def add(a, b):
    """Add two numbers and return
    the sum.  Further detail
    is not part of the target.

    Args:
      a: the first.
    """

    # A comment that survives.
    return a + b  # so does this one


class Box:
    """A class docstring is not a pair either."""

    @functools.cache
    def area(self, scale=1):
        \'\'\'Compute the area, e.g. in square metres.\'\'\'
        return self.w * self.h * scale

    def stub(self):
        """Return the value held by this box."""

    def short(self):
        """Helper."""
        return 1


def grüße(): "Say hello in German, politely."


def outer():
    """Build and return the inner greeting function.

    Second paragraph.
    """
    def inner():
        """Greet the caller by printing a message."""
        print("hi")
    return inner


def text_block():
    """Return a block of text with no indentation."""
    return """\\
first line
    second line"""
'''


@pytest.fixture(scope="module")
def tok():
  """A tiny byte-level BPE (fast to train; its own special tokens)."""
  texts = ["def add(a, b):\n    return a + b\n", "Add two numbers and return the sum.",
           "the quick brown fox jumps over the lazy dog"] * 20
  return Tokenizer.train_bpe(texts, vocab_size=300)


def _config(data_dir, **overrides):
  return config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"),
                              **{"data.data_dir": data_dir, **overrides})


def _pairs(n, source_words=5, target_words=3):
  return [(" ".join(f"s{i}w{k}" for k in range(source_words)),
           " ".join(f"t{i}w{k}" for k in range(target_words))) for i in range(n)]


# Extraction -------------------------------------------------------------------------------


def test_docstring_is_cut_out_and_target_is_its_first_sentence():
  found = {s.qualname: s for s in pyextract.summaries(MODULE, "m")}
  assert list(found) == ["m.add", "m.Box.area", "m.Box.stub", "m.grüße", "m.outer",
                         "m.outer.inner", "m.text_block"]
  add = found["m.add"]
  assert add.target == "Add two numbers and return the sum."
  assert add.source == ("def add(a, b):\n"
                        "    # A comment that survives.\n"
                        "    return a + b  # so does this one\n")
  assert add.lineno == 6
  area = found["m.Box.area"]
  assert area.target == "Compute the area, e.g. in square metres."
  assert area.source == ("@functools.cache\n"
                         "def area(self, scale=1):\n"
                         "    return self.w * self.h * scale\n")
  assert found["m.Box.stub"].source == "def stub(self):\n    pass\n"
  assert found["m.grüße"].source == "def grüße(): pass\n"  # utf-8 column offsets
  assert found["m.grüße"].target == "Say hello in German, politely."
  outer = found["m.outer"]
  assert outer.target == "Build and return the inner greeting function."
  assert "Second paragraph" not in outer.source and "Build and" not in outer.source
  assert '"""Greet the caller' in outer.source  # only the function's own docstring goes
  assert found["m.outer.inner"].source == "def inner():\n    print(\"hi\")\n"
  assert found["m.text_block"].source == (
      'def text_block():\n    return """\\\nfirst line\n    second line"""\n')
  for s in found.values():
    compile(s.source, "<pair>", "exec")  # every source parses on its own


def test_first_sentence_and_filters():
  assert pyextract.first_sentence("  Return x.\n\n  More.") == "Return x."
  assert pyextract.first_sentence("Return x\n  spread over\n lines") == "Return x spread over lines"
  assert pyextract.first_sentence("Ends here.\nNext sentence.") == "Ends here."
  assert pyextract.first_sentence("Version 3.0 of it. Then.") == "Version 3.0 of it."
  assert pyextract.first_sentence(">>> x = 1\n>>> x\n1") == ""  # skipped: under 3 words
  assert pyextract.first_sentence("Return caps as a dict\n>>> c.capa()") == "Return caps as a dict"
  assert pyextract.first_sentence("Finding doctests in C\n~~~~~\nText.") == "Finding doctests in C"
  long = "def big():\n    " + "\n    ".join(f"x{i} = {i}" for i in range(50)) + "\n"
  module = long.replace("def big():\n", 'def big():\n    """Make many small assignments."""\n')
  assert len(pyextract.summaries(module, "m")) == 1
  assert pyextract.summaries(module, "m", max_source_chars=100) == []
  assert pyextract.summaries(module, "m", min_target_words=5) == []


def test_pairs_of_a_small_tree_are_split_by_file(tmp_path):
  for i in range(40):
    (tmp_path / f"mod{i}.py").write_text(MODULE)
  (tmp_path / "broken.py").write_text("def f(:\n")
  found = list(stdlib_builder.pairs(tmp_path))
  assert len(found) == 40 * 7
  assert len({k for k, _ in found}) == len(found)
  assert [k for k, _ in found][:2] == ["mod0.py:6", "mod0.py:23"]
  splits = {}
  for _, record in found:
    splits.setdefault(record["path"], set()).add(stdlib_builder.split_of(record["path"]))
  assert all(len(s) == 1 for s in splits.values())


@pytest.fixture(scope="module")
def summarize(data_dir):
  """The real python_stdlib/summarize config, prepared once (about 15 s)."""
  return _config(data_dir, **{"data.dataset": "tfds:python_stdlib/summarize",
                              "data.source_feature": "source"}).data


def test_stdlib_summarize_config(summarize):
  both = {split: inputs.open_pairs(summarize, split) for split in ("train", "validation")}
  assert len(both["train"]) > 5000 and len(both["validation"]) > 100
  paths = {split: {p.record(i)["path"] for i in range(len(p))} for split, p in both.items()}
  assert not paths["train"] & paths["validation"]
  assert all(stdlib_builder.split_of(p) == "validation" for p in paths["validation"])
  pairs = both[stdlib_builder.split_of("textwrap.py")]
  dedent = next(pairs[i] for i in range(len(pairs))
                if pairs.record(i)["path"] == "textwrap.py"
                and pairs[i][0].startswith("def dedent("))
  assert dedent[1] == pyextract.first_sentence(inspect.getdoc(textwrap.dedent))
  assert dedent[1] not in dedent[0] and "def dedent(text):" in dedent[0]
  assert pairs[-1] == pairs[len(pairs) - 1]
  with pytest.raises(DlmError, match="has no feature 'nope'.*set data.target_feature"):
    inputs.open_pairs(_config(summarize.data_dir, **{
        "data.dataset": "tfds:python_stdlib/summarize", "data.source_feature": "source",
        "data.target_feature": "nope"}).data, "train")


# Rows -------------------------------------------------------------------------------------


def _layout(tok, row, source, target, source_len):
  src, tgt = tok.encode(source)[:source_len], tok.encode(target)
  n = len(src) + 2
  tokens = row["tokens"]
  assert tokens[0] == tok.bos_id and tokens[n - 1] == tok.eos_id
  np.testing.assert_array_equal(tokens[1:n - 1], src)
  kept = min(len(tgt), len(tokens) - n - 1)
  np.testing.assert_array_equal(tokens[n:n + kept], tgt[:kept])
  assert (tokens[n + kept:] == tok.eos_id).all() and n + kept < len(tokens)
  np.testing.assert_array_equal(row["given"], np.arange(len(tokens)) < n)
  assert (row["segment_ids"] == 1).all()
  np.testing.assert_array_equal(row["positions"], np.arange(len(tokens)))
  return n, kept


def test_pair_row_layout_and_truncation(tok):
  source, target = "def add(a, b):\n    return a + b\n", "Add two numbers."
  n, kept = _layout(tok, pipeline.pair_row(tok, tok.encode(source), tok.encode(target),
                                           seq_len=64, source_len=32), source, target, 32)
  assert n == len(tok.encode(source)) + 2 and kept == len(tok.encode(target))
  long_source = " ".join(["the quick brown fox"] * 40)
  row = pipeline.pair_row(tok, tok.encode(long_source), tok.encode(target), seq_len=64,
                          source_len=20)
  n, _ = _layout(tok, row, long_source, target, 20)
  assert n == 22  # the source keeps its first 20 tokens
  long_target = " ".join(["jumps over the lazy dog"] * 40)
  row = pipeline.pair_row(tok, tok.encode(source), tok.encode(long_target), seq_len=64,
                          source_len=32)
  n, kept = _layout(tok, row, source, long_target, 32)
  assert n + kept == 63 and row["tokens"][-1] == tok.eos_id  # cut, still closed by one eos


def test_pair_batches_one_row_per_pair_and_fill_rows(tok):
  pairs = _pairs(11)
  ds = pipeline.dataset(pairs, tok, seq_len=48, batch_size=4, pairs=True, source_len=16,
                        shuffle=False, num_epochs=1)
  batches = list(ds)
  assert len(batches) == 3
  rows = [(b, i) for b in batches for i in range(4)]
  for (source, target), (b, i) in zip(pairs, rows):
    _layout(tok, {k: v[i] for k, v in b.items()}, source, target, 16)
    assert b["given"].dtype == bool
  last = batches[-1]
  assert (last["segment_ids"][3] == 0).all() and not last["given"][3].any()
  assert (last["tokens"][3] == tok.pad_id).all()


@pytest.mark.parametrize("packing", ["concat", "pad"])
def test_unconditional_batches_carry_given_all_false(tok, packing):
  docs = [t for pair in _pairs(9, 30, 30) for t in pair]
  for num_epochs in (1, None):
    it = iter(pipeline.dataset(docs, tok, seq_len=32, batch_size=4, packing=packing,
                               num_epochs=num_epochs))
    for _ in range(3):
      batch = next(it)
      assert set(batch) == set(pipeline.FEATURES)
      assert batch["given"].shape == (4, 32) and batch["given"].dtype == bool
      assert not batch["given"].any()


def test_pair_iterator_restores_exactly(tok):
  make = lambda: iter(pipeline.dataset(_pairs(13), tok, seq_len=40, batch_size=3, pairs=True,  # noqa: E731
                                       seed=2, prefetch=2))
  it = make()
  uninterrupted = [next(it) for _ in range(12)]
  it = make()
  for _ in range(7):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  resumed = make()
  resumed.set_state(state)
  for expected in uninterrupted[7:]:
    got = next(resumed)
    for k in pipeline.FEATURES:
      np.testing.assert_array_equal(got[k], expected[k])


def test_pair_prompt_matches_the_training_prefix(tok):
  source = "def add(a, b):\n    return a + b\n" * 5
  for source_len in (0, 8):
    tokens, given = pipeline.pair_prompt(tok, source, 64, source_len)
    row = pipeline.pair_row(tok, tok.encode(source), tok.encode("Add them."), seq_len=64,
                            source_len=source_len or 32)
    np.testing.assert_array_equal(given, row["given"])
    np.testing.assert_array_equal(tokens[given], row["tokens"][given])
    assert tokens.dtype == np.int32 and given.dtype == bool
    assert (tokens[~given] == tok.mask_id).all()
  assert int(pipeline.pair_prompt(tok, source, 64, 8)[1].sum()) == 10


@pytest.mark.parametrize("overrides, message", [
    ({"data.source_len": 126}, "data.source_len=126 leaves no room for a target"),
    ({"data.seq_len": 4}, r"data.source_len=2 leaves no room .* data.seq_len=4"),
    ({"data.source_len": -1}, "data.source_len must be a non-negative integer"),
    ({"data.target_feature": "source"}, "data.target_feature='source' must name a feature"),
])
def test_bad_pair_config_is_refused(data_dir, overrides, message):
  with pytest.raises(DlmError, match=message):
    _config(data_dir, **{"data.source_feature": "source", **overrides})


# End to end on a jsonl source -------------------------------------------------------------


def test_jsonl_pairs_through_the_iterators_and_inspection(tmp_path):
  rows = [{"prompt": f"question number {i} about sums", "response": f"answer {i} is {2 * i}"}
          for i in range(40)]
  (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  cfg = _config(str(tmp_path / "tfds"), **{
      "data.dataset": f"jsonl:{tmp_path}/*.jsonl", "data.source_feature": "prompt",
      "data.target_feature": "response", "data.validation_fraction": 0.2,
      "data.seq_len": 32, "data.tokenizer.vocab_size": 300, "train.batch_size": 8})
  tok = inputs.load_tokenizer(cfg.data)
  assert "-prompt+response-" in inputs.bpe_cache_path(cfg.data)
  val = inputs.open_pairs(cfg.data, "validation")
  assert set(val[:]) <= {(r["prompt"], r["response"]) for r in rows}
  mesh = sharding.make_mesh((2, 2, 2))
  it = batches.train_batches(cfg, tok, mesh)
  batch = next(it)
  it.close()
  assert set(batch) == set(pipeline.FEATURES)
  assert batch["given"].shape == (8, 32) and batch["given"].dtype == jax.numpy.bool_
  given = np.asarray(batch["given"])
  tokens = np.asarray(batch["tokens"])
  for row, g in zip(tokens, given):
    n = int(g.sum())
    assert g[:n].all() and row[0] == tok.bos_id and row[n - 1] == tok.eos_id
    assert tok.decode(row[1:n - 1]).startswith("question number")
  info = data_main.inspect(cfg)
  assert info["splits"]["validation"]["roundtrip_exact"] is True
  assert info["splits"]["train"]["documents"] + info["splits"]["validation"]["documents"] == 40
  ex = info["example"]
  assert ex["given_len"] == len(tok.encode(ex["source_head"])) + 2
  assert ex["target_decoded"] == ex["target"]
  assert ex["given_len"] + ex["target_len"] + ex["eos_fill"] == 32


# BLEU -------------------------------------------------------------------------------------


def test_bleu():
  hyps = ["Return the sum of two numbers.", "Open the file and read its lines."]
  assert textmetrics.bleu(hyps, hyps) == pytest.approx(100.0)
  assert textmetrics.bleu(["alpha beta gamma delta"], ["one two three four"]) < 1.0
  partial = textmetrics.bleu(["Return the sum of the two numbers given."], hyps[:1])
  assert 0.0 < partial < 100.0
  with pytest.raises(DlmError, match="one reference per hypothesis"):
    textmetrics.bleu(hyps, hyps[:1])
