"""Response length against the maximum generation length: eos vs rainbow padding (README table).

  python bench/length_robustness.py [--root=runs/instruct] [--num_prompts=48]
      [--lengths=64,128,256,512] [--tokens_per_step=4] [--block_length=32]
      [--models=eos,rainbow,lora] [--out=FILE.json]

1. Trains, unless already trained in --root, the four runs of `configs/instruct.py`: `base`
   (masked model on the stdlib prose), `eos` and `rainbow` (full supervised fine-tuning of the
   base on `python_stdlib/instruct`, responses padded to 512 tokens with repeated eos or with
   one eos and 7 cycling pads) and `lora` (the rainbow retrofit of the eos model: LoRA
   adapters and the output bias only).
2. Decodes the first --num_prompts validation prompts with each fine-tuned model by LLaDA's
   low-confidence remasking (greedy), on canvases of `[bos] prompt [eos]` (the prompt up to
   126 tokens, as in training) followed by max_length masks, max_length in --lengths, with a
   fixed --tokens_per_step (steps = max_length / tokens_per_step), over the whole canvas at once
   (--block_length=0) or in LLaDA's semi-autoregressive blocks of --block_length tokens (each
   block then gets block_length / tokens_per_step steps). A response ends at its first eos or
   pad token (`samplers.text.cut`).
3. Reports per model and max_length: the mean response length in tokens, the reference's
   (capped to what fits: the room after the prompt less the closing eos), their ratio
   (sum of response lengths / sum of capped reference lengths), the fraction of empty
   responses, and corpus BLEU (sacrebleu) against the capped references.
Prints one JSON line per (model, max_length), then the markdown table; --out writes the JSON
rows, and a later run with the same --out reuses the rows it holds for the same checkpoint and
settings (so models can be decoded by separate runs and tabled together).
"""

import json
import os
import time

import numpy as np
from absl import app, flags

from dlm import config as config_lib
from dlm import samplers, textmetrics
from dlm.data import inputs
from dlm.samplers import text as sample_text
from dlm.train import loop
from dlm.train import restore

flags.DEFINE_string("root", "runs/instruct", "Workdirs of the four runs.")
flags.DEFINE_integer("num_prompts", 48, "Validation prompts decoded per model and length.")
flags.DEFINE_list("lengths", ["64", "128", "256", "512"], "Maximum generation lengths.")
flags.DEFINE_integer("tokens_per_step", 4, "Tokens revealed per low-confidence step.")
flags.DEFINE_integer("block_length", 32, "Semi-autoregressive block length (LLaDA's 32 for its "
                     "instruct model); 0 = the whole canvas as one block.")
flags.DEFINE_list("models", ["eos", "rainbow", "lora"], "Fine-tuned runs to decode.")
flags.DEFINE_string("out", None, "Write the JSON rows here.")
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INIT_FROM = {"base": None, "eos": "base", "rainbow": "base", "lora": "eos"}
LABELS = {"eos": "eos padding (full SFT)", "rainbow": "rainbow padding (full SFT)",
          "lora": "eos model + rainbow LoRA retrofit"}


def ensure_trained(root: str, variant: str) -> str:
  workdir = os.path.join(root, variant)
  overrides = {"train.progress": False}
  if INIT_FROM[variant]:
    overrides["train.init_from"] = ensure_trained(root, INIT_FROM[variant])
  config = config_lib.from_file(os.path.join(ROOT, f"configs/instruct.py:{variant}"),
                                **overrides)
  loop.train(config, workdir)  # resumes; returns at once if already at train.steps
  return workdir


def canvas_length(config, max_length: int) -> int:
  """`[bos] prompt [eos]` room (as in training) plus max_length masks."""
  return config.data.source_len + 2 + max_length


def canvases(tokenizer, config, pairs, max_length: int):
  """Rows `(tokens, given)` of `canvas_length` tokens, the room after each prompt, and the
  references cut to fit it (less the closing eos)."""
  length = canvas_length(config, max_length)
  rows, rooms, refs, ref_lens = [], [], [], []
  for source, target in pairs:
    tokens, given = sample_text.canvas_template(tokenizer, "masked", length=length,
                                                source=source,
                                                source_len=config.data.source_len)
    room = length - int(given.sum())
    ref = tokenizer.encode(target)[:room - 1]
    rows.append((tokens, given))
    rooms.append(room)
    refs.append(tokenizer.decode(ref, skip_special_tokens=True).strip())
    ref_lens.append(len(ref))
  return rows, rooms, refs, ref_lens


def decode(workdir: str, pairs, max_length: int, steps: int) -> dict:
  config, tokenizer, model, step = restore.load(workdir)
  rows, rooms, refs, ref_lens = canvases(tokenizer, config, pairs, max_length)
  # Blocks from the canvas start, as the README's table was measured (before #22 made blocks
  # start at each prompt's end by default; the canvas's prompt lengths vary).
  cfg = samplers.SamplerConfig(name="low_confidence", steps=steps, temperature=0.0,
                               block_length=FLAGS.block_length, blocks_from="canvas")
  start = time.perf_counter()
  out = sample_text.fill(model, tokenizer, cfg, rows, batch_size=len(rows))
  wall = time.perf_counter() - start
  gen_lens = [sum(1 for g in r["given"][:len(r["tokens"])] if not g) for r in out]
  hyps = [r["generated"].strip() for r in out]
  stops = sample_text.stop_ids(tokenizer)
  ended = [any(t in stops for t, g in zip(r["full_tokens"], r["given"]) if not g) for r in out]
  return {
      "workdir": workdir, "step": step, "padding": config.data.response_padding,
      "lora_rank": config.model.get("lora_rank", 0), "max_length": max_length,
      "steps": steps, "block_length": FLAGS.block_length, "prompts": len(rows),
      "mean_len": float(np.mean(gen_lens)), "mean_ref_len": float(np.mean(ref_lens)),
      "len_ratio": float(np.sum(gen_lens) / max(np.sum(ref_lens), 1)),
      "empty_fraction": float(np.mean([n == 0 for n in gen_lens])),
      "ended_fraction": float(np.mean(ended)),
      "bleu": textmetrics.bleu(hyps, refs), "wall_s": wall,
      "examples": [{"prompt": p[:120], "reference": r[:200], "generated": h[:200]}
                   for (p, _), r, h in zip(pairs[:2], refs[:2], hyps[:2])],
  }


def _steps(config, max_length: int) -> int:
  """Sampler steps for --tokens_per_step. In blocks, steps count over the whole canvas
  (`block_plan`), prompt included: the prompt's blocks are skipped at no cost (`first_step`)."""
  if not FLAGS.block_length:
    return max_length // FLAGS.tokens_per_step
  blocks = canvas_length(config, max_length) // FLAGS.block_length
  return blocks * -(-FLAGS.block_length // FLAGS.tokens_per_step)


def _latest_step(workdir: str) -> int:
  from dlm.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top

  ckpts = ckpt_lib.Checkpoints(workdir, read_only=True, async_save=False)
  try:
    return ckpts.latest_step()
  finally:
    ckpts.close()


def table(rows) -> str:
  lengths = sorted({r["max_length"] for r in rows})
  head = " | ".join(f"{n}" for n in lengths)
  lines = [f"| model | metric | {head} |", "|---|---|" + "---|" * len(lengths)]
  for name in dict.fromkeys(r["model"] for r in rows):
    by = {r["max_length"]: r for r in rows if r["model"] == name}
    for metric, fmt in (("len_ratio", "{:.3f}"), ("mean_len", "{:.1f}"),
                        ("empty_fraction", "{:.2f}"), ("bleu", "{:.2f}")):
      cells = " | ".join(fmt.format(by[n][metric]) for n in lengths)
      lines.append(f"| {LABELS.get(name, name)} | {metric} | {cells} |")
  return "\n".join(lines)


def main(argv):
  del argv
  workdirs = {m: ensure_trained(FLAGS.root, m) for m in FLAGS.models}
  config = restore.read_config(workdirs[FLAGS.models[0]])
  pairs = inputs.open_pairs(config.data, config.data.eval_split)[:FLAGS.num_prompts]
  saved = []
  if FLAGS.out and os.path.exists(FLAGS.out):
    with open(FLAGS.out) as f:
      saved = json.load(f)
  rows = []
  for name in FLAGS.models:
    step = _latest_step(workdirs[name])
    for max_length in map(int, FLAGS.lengths):
      steps = _steps(config, max_length)
      same = [r for r in saved if (r["model"], r["step"], r["max_length"], r["prompts"],
                                   r["steps"], r.get("block_length", 0)) ==
              (name, step, max_length, len(pairs), steps, FLAGS.block_length)]
      r = same[0] if same else {"bench": "length_robustness", "model": name,
                                **decode(workdirs[name], pairs, max_length, steps)}
      print(json.dumps(r), flush=True)
      rows.append(r)
      if FLAGS.out:
        kept = [x for x in saved if (x["model"], x["max_length"]) not in
                {(y["model"], y["max_length"]) for y in rows}]
        with open(FLAGS.out, "w") as f:
          json.dump(kept + rows, f, indent=1)
  refs = {r["max_length"]: r["mean_ref_len"] for r in rows}
  print("\nmean reference length (tokens, capped to fit): "
        + ", ".join(f"{n}: {v:.0f}" for n, v in sorted(refs.items())))
  print(table(rows))


if __name__ == "__main__":
  app.run(main)
