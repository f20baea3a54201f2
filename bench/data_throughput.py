"""Input-pipeline throughput on the quickstart data: tokenize + pack + batch (+ device put).

  python bench/data_throughput.py [--config=configs/quickstart.py:bpe] [--seconds=20]
  python bench/data_throughput.py --prepare_mb=500 [--prepare_workers=1,2]

Prints one JSON line. With `--prepare_mb=N` it instead writes a synthetic corpus of N MB (random
words, documents of 1-4 KB) as text files (64 files, a document per line), JSON lines (one
file, cut into pieces by byte ranges), Parquet (64 files) and a `datasets` `save_to_disk`
directory, and times preparing each (`sources.prepare`: reading, hashing into splits, writing
array_record) with each worker-process count (`data.prepare_workers`, dlm/data/shards.py) in a
fresh data directory: one JSON line per format and count with MB/s and documents/s. The
pipeline must not bound training: compare `tokens_per_s` with the quickstart model's training
tokens/s from `bench/train_throughput.py`.
"""

import json
import os
import shutil
import time

from absl import app, flags

from dlm import cli, sharding
from dlm.data import inputs
from dlm.train import batches

flags.DEFINE_float("seconds", 20.0, "How long to pull batches for (after a warm-up batch).")
flags.DEFINE_integer("prepare_mb", 0, "Time preparing a synthetic corpus of this many MB "
                     "instead (0: measure reading).")
flags.DEFINE_list("prepare_workers", ["1", "2"], "Worker-process counts to prepare with.")
FLAGS = flags.FLAGS


def measure(next_batch, seconds: float, tokens_per_batch: int) -> float:
  next_batch()  # warm-up: opens files, starts threads
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next_batch()
    n += 1
  return n * tokens_per_batch / (time.perf_counter() - start)


def _corpus(root, megabytes: int) -> tuple[list[str], int, int]:
  """Writes the synthetic documents as text files (a document per line, 64 files), JSON lines
  and Parquet under `root`; returns the three `data.dataset` values, the documents and bytes."""
  import random  # pylint: disable=g-import-not-at-top

  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  rng = random.Random(0)
  words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
           for _ in range(20000)]
  docs, size = [], 0
  while size < megabytes * 10**6:
    doc = " ".join(rng.choices(words, k=rng.randint(170, 700)))
    docs.append(doc)
    size += len(doc) + 1
  import datasets  # pylint: disable=g-import-not-at-top

  for kind in ("text", "jsonl", "parquet"):
    os.makedirs(os.path.join(root, kind))
  with open(os.path.join(root, "jsonl/all.jsonl"), "w") as f:
    f.writelines(json.dumps({"text": d}) + "\n" for d in docs)
  for i in range(64):
    part = docs[i::64]
    with open(os.path.join(root, f"text/{i:02d}.txt"), "w") as f:
      f.writelines(d + "\n" for d in part)
    pq.write_table(pa.table({"text": part}), os.path.join(root, f"parquet/{i:02d}.parquet"))
  datasets.disable_progress_bars()
  datasets.Dataset.from_dict({"text": docs}).save_to_disk(os.path.join(root, "hf"))
  return [f"text:{root}/text/*.txt", f"jsonl:{root}/jsonl/*.jsonl",
          f"parquet:{root}/parquet/*.parquet", f"hf:{root}/hf"], len(docs), size


def prepare_throughput(config) -> None:
  import tempfile  # pylint: disable=g-import-not-at-top

  from dlm.data import sources  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as root:
    datasets, count, size = _corpus(root, FLAGS.prepare_mb)
    for dataset in datasets:
      for workers in map(int, FLAGS.prepare_workers):
        data = config.data.copy_and_resolve_references()
        data.dataset, data.document_per, data.prepare_workers = dataset, "line", workers
        data.data_dir = os.path.join(root, f"tfds{workers}")
        start = time.perf_counter()
        b = sources.prepare(data)
        wall = time.perf_counter() - start
        got = sum(b.info.splits[s].num_examples for s in b.info.splits)
        assert got == count, (dataset, got, count)
        print(json.dumps({"bench": "data_prepare", "dataset": dataset.split(":")[0],
                          "workers": workers, "mb": round(size / 1e6, 1), "documents": count,
                          "wall_s": round(wall, 1), "mb_per_s": round(size / 1e6 / wall, 2),
                          "documents_per_s": round(count / wall)}), flush=True)
        shutil.rmtree(data.data_dir)


def main(argv):
  del argv
  if FLAGS.prepare_mb:
    with cli.user_errors(), cli.stdout_to_stderr():
      config = cli.config()
    prepare_throughput(config)
    return
  with cli.user_errors(), cli.stdout_to_stderr():
    config = cli.config()
    config.data.prefetch = 0  # measure the work itself, in this thread
    tokenizer = inputs.load_tokenizer(config.data)
    mesh = sharding.make_mesh(config.mesh.shape)
    per_batch = config.train.batch_size * config.data.seq_len
    it = batches.train_batches(config, tokenizer, mesh)
    numpy_rate = measure(it.next_local, FLAGS.seconds, per_batch)
    it = batches.train_batches(config, tokenizer, mesh)
    device_rate = measure(lambda: next(it), FLAGS.seconds, per_batch)
  print(json.dumps({
      "bench": "data_throughput",
      "dataset": config.data.dataset,
      "seq_len": config.data.seq_len,
      "batch_size": config.train.batch_size,
      "packing": config.data.packing,
      "tokens_per_s": round(numpy_rate),  # tokenize + pack + batch, numpy
      "tokens_per_s_to_device": round(device_rate),  # ... + global jax.Array on the mesh
  }))


if __name__ == "__main__":
  cli.define_config_flag()
  flags.FLAGS.set_default("config", "configs/quickstart.py:bpe")
  app.run(main, flags_parser=cli.parse_flags)
