"""Converting and sampling a released model's exact shapes: LLaDA-8B (32 layers, width 4096,
32 heads, MLP 12288, 126464 embedding rows), random bfloat16 weights written as sharded
safetensors with an index, as the hub serves them.

  python bench/convert.py [--layers=32] [--sample_layers=1,4] [--dir=/tmp/dlm-bench-convert]

Prints JSON lines: the conversion (`python -m dlm.convert`, run as its own process: its time
and peak RSS against the model's size), then per-token sampling latency of LLaDA-shaped models
with `--sample_layers` layers on this machine (low-confidence remasking, a 32-token prompt,
`--gen` tokens in one block, `--steps` steps; the second of two runs, compilation excluded).
The disk and memory are checked first; where they cannot hold `--layers` layers, fewer are
converted and the line says so. The tokenizer is a small BPE with LLaDA's special tokens (the
converter checks only that it fits the embedding).
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

flags.DEFINE_integer("layers", 32, "Layers of the converted model (LLaDA-8B: 32).")
flags.DEFINE_string("sample_layers", "1,4", "Layer counts whose sampling latency is measured.")
flags.DEFINE_string("dir", "/tmp/dlm-bench-convert", "Scratch directory (removed at the end).")
flags.DEFINE_integer("gen", 32, "Generated tokens per sample.")
flags.DEFINE_integer("steps", 8, "Sampling steps.")
FLAGS = flags.FLAGS

SHAPE = dict(d_model=4096, n_heads=32, n_kv_heads=32, mlp_hidden_size=12288, vocab_size=126464,
             embedding_size=126464)
SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>", "<|eot_id|>",
            "<|start_header_id|>", "<|end_header_id|>"]


def model_bytes(layers: int) -> int:
  d, m, v = SHAPE["d_model"], SHAPE["mlp_hidden_size"], SHAPE["embedding_size"]
  return 2 * (2 * v * d + layers * (4 * d * d + 3 * d * m + 2 * d) + d)


def write_llada(directory: str, layers: int) -> None:
  """A LLaDA-8B-shaped HF directory with `layers` layers of random bfloat16 weights."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  from dlm.convert import hf_files, llada

  os.makedirs(directory, exist_ok=True)
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  texts = [open(os.__file__, encoding="utf-8").read()]
  tok.train_from_iterator(texts, trainers.BpeTrainer(
      vocab_size=400, special_tokens=SPECIALS, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.save(os.path.join(directory, "tokenizer.json"))
  ids = {t: tok.token_to_id(t) for t in SPECIALS}
  hf = dict(SHAPE, model_type="llada", architectures=["LLaDAModelLM"], n_layers=layers,
            rope_theta=500000.0, rms_norm_eps=1e-5, weight_tying=False, block_type="llama",
            include_qkv_bias=False, include_bias=False, max_sequence_length=4096,
            mask_token_id=ids["<|mdm_mask|>"], eos_token_id=ids["<|endoftext|>"],
            bos_token_id=ids["<|startoftext|>"], pad_token_id=ids["<|endoftext|>"],
            torch_dtype="bfloat16")
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(hf, f)
  block = (np.random.default_rng(0).standard_normal(1 << 20) * 0.02).astype(ml_dtypes.bfloat16)

  def tensors():
    for t in llada.tensors(hf):
      array = np.resize(block, t.shape)  # random values, tiled: cheap for 16 GB
      if t.name.endswith("norm.weight") or t.name.endswith("ln_f.weight"):
        array = np.ones(t.shape, ml_dtypes.bfloat16)
      yield t.name, array

  hf_files.write_weights(directory, tensors(), shard_bytes=5 << 30)


def convert(hf_dir: str, workdir: str, dtype: str = "bfloat16") -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  out = subprocess.run([sys.executable, "-m", "dlm.convert", f"--from_hf={hf_dir}",
                        f"--workdir={workdir}", f"--dtype={dtype}"], env=env,
                       capture_output=True, text=True, check=False)
  if out.returncode:
    raise SystemExit(f"conversion failed: {out.stderr[-2000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def sample_latency(workdir: str) -> dict:
  import dlm  # pylint: disable=g-import-not-at-top

  run = dlm.load(workdir)
  prompt = " ".join(["def"] * 32)
  times = []
  for seed in range(2):
    start = time.perf_counter()
    out = dlm.sample(run, [prompt], sampler="low_confidence", length=32 + FLAGS.gen,
                     steps=FLAGS.steps, block_length=FLAGS.gen, temperature=0.0, seed=seed)
    times.append(time.perf_counter() - start)
  generated = len(out[0]["full_tokens"]) - sum(out[0]["given"])
  return {"wall_s": round(times[-1], 3), "generated_tokens": generated,
          "ms_per_token": round(1000 * times[-1] / generated, 1),
          "ms_per_step": round(1000 * times[-1] / FLAGS.steps, 1)}


def main(argv):
  del argv
  root = FLAGS.dir
  shutil.rmtree(root, ignore_errors=True)
  os.makedirs(root)
  try:
    layers, note = FLAGS.layers, ""
    # HF files + the converted workdir on disk; the converted model (once) in memory.
    disk = shutil.disk_usage(root).free
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    while layers > 1 and (2.2 * model_bytes(layers) > disk
                          or 1.25 * model_bytes(layers) > memory):
      layers -= 1
    if layers != FLAGS.layers:
      note = (f"scaled down from {FLAGS.layers} layers: {disk / 2**30:.0f} GiB free disk, "
              f"{memory / 2**30:.0f} GiB available memory")
    start = time.perf_counter()
    write_llada(f"{root}/hf", layers)
    written = time.perf_counter() - start
    report = convert(f"{root}/hf", f"{root}/workdir")
    print(json.dumps({"bench": "convert", "arch": "llada", "layers": layers, "note": note,
                      "model_gib": round(model_bytes(layers) / 2**30, 2),
                      "write_hf_s": round(written, 1), "convert_s": report["seconds"],
                      "peak_rss_gib": report["peak_rss_gb"],
                      "peak_rss_over_model": round(
                          report["peak_rss_gb"] * 2**30 / model_bytes(layers), 3),
                      "parameters": report["parameters"]}), flush=True)
    shutil.rmtree(root)
    for n in [int(x) for x in FLAGS.sample_layers.split(",") if x]:
      os.makedirs(root)
      write_llada(f"{root}/hf", n)
      convert(f"{root}/hf", f"{root}/workdir")
      print(json.dumps({"bench": "sample_latency", "arch": "llada", "layers": n,
                        "param_dtype": "bfloat16", "compute_dtype": "float32",
                        "prompt": 32, "gen": FLAGS.gen, "steps": FLAGS.steps,
                        **sample_latency(f"{root}/workdir")}), flush=True)
      shutil.rmtree(root)
  finally:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
