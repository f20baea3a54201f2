"""From text to canvases and from samples back to text: prompts, infilling templates, eos."""

from __future__ import annotations

import dataclasses
import os
import re
import sys

import jax
import numpy as np
from flax import nnx

from dlm import samplers, sharding
from dlm.data import chat, pipeline
from dlm.errors import DlmError
from dlm.models.transformer import TransformerConfig
from dlm.samplers.autoregressive import start_token
from dlm.samplers.core import Canvas, SamplerConfig

_SPAN = re.compile(r"\[MASK(?:\*(\d+))?\]")


def infill_template(tokenizer, text: str) -> tuple[np.ndarray, np.ndarray]:
  """`The [MASK*3] sat on the [MASK] mat` -> token ids and a given-mask: each `[MASK]` is one
  token to fill, `[MASK*n]` is n; the text around them is given and never changes."""
  ids, given, last = [], [], 0
  for m in _SPAN.finditer(text):
    piece = tokenizer.encode(text[last:m.start()]).tolist() if m.start() > last else []
    n = int(m.group(1) or 1)
    ids += piece + [tokenizer.mask_id] * n
    given += [True] * len(piece) + [False] * n
    last = m.end()
  if last == 0:
    raise DlmError("--infill text has no [MASK] or [MASK*n] span to fill")
  tail = tokenizer.encode(text[last:]).tolist() if last < len(text) else []
  ids += tail
  given += [True] * len(tail)
  return np.asarray(ids, np.int32), np.asarray(given, bool)


def prompt_template(tokenizer, prompt, length: int, add_bos: bool):
  """(tokens, given) of a prompt (text, or token ids already encoded: a rendered chat) and
  `length - len(prompt)` masks to generate."""
  encoded = tokenizer.encode(prompt) if isinstance(prompt, str) else np.asarray(prompt)
  ids = ([tokenizer.bos_id] if add_bos else []) + encoded.tolist()
  if len(ids) >= length:
    raise DlmError(f"the prompt has {len(ids)} tokens but the model's length is {length}: "
                   "nothing is left to generate")
  tokens = np.full((length,), tokenizer.mask_id, np.int32)
  tokens[:len(ids)] = ids
  given = np.zeros((length,), bool)
  given[:len(ids)] = True
  return tokens, given


def prompt_rows(tokenizer, prompts, new_tokens: int, add_bos: bool) -> list:
  """(tokens, given) rows of prompts (texts or ids) each followed by `new_tokens` masks, the
  shorter ones padded after them with given pad tokens to one length."""
  rows = []
  for prompt in prompts:
    encoded = tokenizer.encode(prompt) if isinstance(prompt, str) else np.asarray(prompt)
    n = len(encoded) + bool(add_bos)
    rows.append(prompt_template(tokenizer, prompt, n + new_tokens, add_bos))
  width = max(len(t) for t, _ in rows)
  return [(np.pad(t, (0, width - len(t)), constant_values=tokenizer.pad_id),
           np.pad(g, (0, width - len(g)), constant_values=True)) for t, g in rows]


def stop_ids(tokenizer) -> set[int]:
  return {tokenizer.eos_id, tokenizer.pad_id, *tokenizer.reserved_pad_ids,
          *tokenizer.stop_ids}


def cut(ids, given, tokenizer) -> list[int]:
  """Tokens up to the first generated eos (or pad): variable-length output."""
  stops = stop_ids(tokenizer)
  out = []
  for token, is_given in zip(np.asarray(ids).tolist(), np.asarray(given).tolist()):
    if not is_given and token in stops:
      break
    out.append(token)
  return out


def data_mesh(batch: int):
  """A data-parallel mesh over as many devices as evenly split the batch."""
  n = max(d for d in range(1, jax.device_count() + 1) if batch % d == 0)
  return sharding.make_mesh((n, 1, 1), jax.devices()[:n])


def canvas_template(tokenizer, family: str, *, length: int, prompt: str | None = None,
                    infill: str | None = None, source: str | None = None, source_len: int = 0,
                    add_bos: bool = False, max_length: int | None = None):
  """(tokens, given) of one canvas: a prompt, an infilling template, a pair's source (the
  conditional tasks' `[bos] source [eos]` prefix), or nothing."""
  if sum(x is not None and len(x) > 0 for x in (prompt, infill, source)) > 1:
    raise DlmError("give one of --prompt, --infill and --source")
  if infill:
    tokens, given = infill_template(tokenizer, infill)
    if max_length is not None and len(tokens) > max_length:
      raise DlmError(f"the infill template has {len(tokens)} tokens but the model's length "
                     f"is {max_length}")
  elif prompt is not None and len(prompt):
    tokens, given = prompt_template(tokenizer, prompt, length, add_bos)
  elif source is not None:
    tokens, given = pipeline.pair_prompt(tokenizer, source, length, source_len)
  else:
    tokens = np.full((length,), tokenizer.mask_id, np.int32)
    given = np.zeros((length,), bool)
    if add_bos:
      tokens[0], given[0] = tokenizer.bos_id, True
  if family == "autoregressive" and not given[0]:
    tokens[0], given[0] = start_token(tokenizer, add_bos), True
  return tokens, given


def sample(model, tokenizer, sampling: SamplerConfig, *, num_samples: int, length: int,
           prompt: str | None = None, infill: str | None = None, source: str | None = None,
           source_len: int = 0, add_bos: bool = False, seed: int = 0, batch_size: int = 0,
           max_length: int | None = None, mesh=None, times=None,
           progress: bool = False) -> list[dict]:
  """Generates `num_samples` sequences (`batch_size` at a time, 0 = as many as fit in memory,
  on `mesh`, where the model's parameters live); returns one dict per sample (text, tokens,
  nfe, ...)."""
  family = model.family
  row = canvas_template(tokenizer, family, length=length, prompt=prompt, infill=infill,
                        source=source, source_len=source_len, add_bos=add_bos,
                        max_length=max_length)
  return fill(model, tokenizer, sampling, [row] * num_samples, seed=seed, batch_size=batch_size,
              mesh=mesh, times=times, progress=progress)


def chat_prompt(tokenizer, template: str, prompt: str, system: str | None = None) -> np.ndarray:
  """The ids of a one-turn chat (an optional system message, the user's prompt) rendered by the
  model's chat template, ready for the assistant's answer (HF's `apply_chat_template` with
  `add_generation_prompt=True`)."""
  special = {f"{role}_token": tokenizer.token(getattr(tokenizer, f"{role}_id"))
             for role in ("bos", "eos", "pad", "mask")}
  text = chat.render(template, chat.messages_of(prompt, system), special)
  return tokenizer.encode_template(text)


def memory_estimate(model, mesh, batch: int, length: int, vocab_size: int) -> dict:
  """Bytes per device of the model's parameters as placed (sharded or replicated on `mesh`)
  and of a sampling batch's working set (`auto_batch_size`'s estimate for the rows each device
  holds: the batch split over the axes the backbone's rules shard it on), in GiB."""
  arrays = [x for x in jax.tree.leaves(nnx.state(model)) if isinstance(x, jax.Array)]
  total = sum(x.nbytes for x in arrays)
  device = mesh.devices.flat[0]
  per_device = sum(s.data.nbytes for x in arrays for s in x.addressable_shards
                   if s.device == device)
  rows = -(-batch // _batch_ways(model, mesh))
  gib = 2.0**30
  return {"parameters_gib": round(total / gib, 3),
          "parameters_per_device_gib": round(per_device / gib, 3),
          "batch_per_device_gib": round(rows * _row_bytes(model, length, vocab_size) / gib, 3),
          "mesh": dict(mesh.shape)}


def _row_bytes(model, length: int, vocab_size: int) -> int:
  """A sampled row's working set: about eight float32 copies of its logits (softmax,
  filtering, sorting, the draw) plus the backbone's activations and attention scores."""
  nets = [node.cfg for _, node in nnx.iter_graph(model)
          if isinstance(getattr(node, "cfg", None), TransformerConfig)]
  width = max((c.width for c in nets), default=1024)
  heads = max((c.heads for c in nets), default=16)
  return 4 * length * (8 * vocab_size + 32 * width) + 4 * 2 * heads * length * length


def _batch_ways(model, mesh) -> int:
  """How many ways the backbone's rules split a batch on `mesh` (data, and fsdp by default)."""
  rules = [node.cfg.rules for _, node in nnx.iter_graph(model)
           if isinstance(getattr(node, "cfg", None), TransformerConfig) and node.cfg.rules]
  return sharding.batch_axes_size(mesh, rules[0]) if rules else mesh.shape["data"]


def _free_bytes(mesh) -> int:
  """Memory one data shard may use for sampling: half of what the host has available on CPU,
  80% of a device's free memory on an accelerator."""
  device = mesh.devices.flat[0]
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and "bytes_limit" in stats:
    return int(0.8 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
  available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  return available // 2 // max(mesh.shape["data"], 1) if device.platform == "cpu" else available


def auto_batch_size(model, rows: int, length: int, vocab_size: int, mesh) -> int:
  """How many rows to sample at once so that a batch fits in memory: an estimate of a row's
  working set (about eight float32 copies of its logits, for the softmax, filtering, sorting
  and the draw, plus the backbone's activations and attention scores) against the free memory
  of each data shard."""
  per_row = _row_bytes(model, length, vocab_size)
  per_shard = max(1, _free_bytes(mesh) // max(per_row, 1))
  return int(min(rows, per_shard * mesh.shape["data"]))


def fill(model, tokenizer, sampling: SamplerConfig, rows, *, seed: int = 0, batch_size: int = 0,
         mesh=None, times=None, progress: bool = False) -> list[dict]:
  """Samples every canvas row `(tokens, given)` (all of one length), `batch_size` at a time
  (0: as many as fit in memory, `auto_batch_size`), with a progress bar on stderr over several
  batches if `progress`. Each result has `text` (given and generated, to the first generated
  eos), `generated` (the generated tokens only, to that eos), the raw tokens, the reveal steps
  and the NFE."""
  if not rows:
    return []
  length = len(rows[0][0])
  # Every batch shares the rows' longest generation (one compiled shape, blocks checked once).
  sampling = samplers.with_generation_length(sampling, Canvas(
      np.zeros((len(rows), length), np.int32), np.stack([np.asarray(r[1], bool) for r in rows])))
  samplers.check(sampling, length, model.family)
  sampling = dataclasses.replace(sampling, stop_ids=tuple(sorted(stop_ids(tokenizer))))
  if mesh is None:
    mesh = data_mesh(min(batch_size or len(rows), len(rows)))
  if not batch_size:
    batch_size = auto_batch_size(model, len(rows), length, tokenizer.vocab_size, mesh)
  batch_size = min(batch_size, len(rows))
  shards = _batch_ways(model, mesh)  # whole rows per batch shard (short chunks are padded)
  batch_size = -(-batch_size // shards) * shards
  if progress:  # the inputs are checked: say what sampling will hold before it starts
    estimate = memory_estimate(model, mesh, batch_size, length, tokenizer.vocab_size)
    print(f"dlm: parameters {estimate['parameters_gib']} GiB, "
          f"{estimate['parameters_per_device_gib']} GiB per device on mesh {estimate['mesh']}; "
          f"sampling {batch_size} rows needs about {estimate['batch_per_device_gib']} GiB per "
          "device more", file=sys.stderr)
  batch_sharding = sharding.named_sharding(mesh, ("batch", "length"), (("batch", "data"),))
  results = []
  rng = jax.random.PRNGKey(seed)
  starts = range(0, len(rows), batch_size)
  if progress and len(starts) > 1:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    print(f"dlm: {len(rows)} samples in {len(starts)} batches of {batch_size}",
          file=sys.stderr)
    starts = tqdm(starts, file=sys.stderr, unit="batch", dynamic_ncols=True)
  with jax.set_mesh(mesh):
    for start in starts:
      chunk = rows[start:start + batch_size]
      n = len(chunk)
      chunk = chunk + [chunk[-1]] * (batch_size - n)  # one compiled shape
      tokens = np.stack([np.asarray(r[0], np.int32) for r in chunk])
      given = np.stack([np.asarray(r[1], bool) for r in chunk])
      canvas = Canvas(jax.device_put(tokens, batch_sharding),
                      jax.device_put(given, batch_sharding))
      out = samplers.generate(model, sampling, jax.random.fold_in(rng, start), canvas, times)
      out = jax.device_get(out)
      for b in range(n):
        ids = cut(out.tokens[b], given[b], tokenizer)
        generated = [tok for tok, g in zip(ids, given[b]) if not g]  # ids: a row prefix
        results.append({
            "text": tokenizer.decode(ids, skip_special_tokens=True),
            "generated": tokenizer.decode(generated, skip_special_tokens=True),
            "tokens": ids,
            "full_tokens": out.tokens[b].tolist(),
            "given": given[b].tolist(),
            "revealed_at": out.revealed_at[b].tolist(),
            "nfe": int(out.nfe[b]),
        })
  return results
