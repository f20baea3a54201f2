"""Watching a sample being denoised: terminal frames and a self-contained HTML replay.

Both read `Samples.revealed_at` (the step that revealed each position; -1 for given tokens), so
any sampler can be replayed without storing every intermediate state.
"""

from __future__ import annotations

import html
import json

import numpy as np

MASK_GLYPH = "\u2592"  # ▒
_NEW = "\033[1;32m"
_GIVEN = "\033[2m"
_END = "\033[0m"


def token_strings(tokenizer, ids) -> list[str]:
  """Each token's own text (byte-level pieces decoded one by one)."""
  return [tokenizer.decode([int(i)]) for i in ids]


def frame(pieces: list[str], revealed_at: np.ndarray, step: int, color: bool = True) -> str:
  """The text after `step`: revealed tokens, [MASK] glyphs, the newest tokens highlighted."""
  out = []
  for piece, at in zip(pieces, revealed_at):
    if at < 0:
      out.append(f"{_GIVEN}{piece}{_END}" if color else piece)
    elif at > step:
      out.append(MASK_GLYPH)
    elif at == step and color:
      out.append(f"{_NEW}{piece}{_END}")
    else:
      out.append(piece)
  return "".join(out)


def terminal_frames(pieces, revealed_at, steps: int, max_frames: int = 16,
                    color: bool = True) -> list[str]:
  """Up to `max_frames` frames, evenly spread over the steps that revealed something."""
  active = sorted(set(int(a) for a in revealed_at if a >= 0))
  if len(active) > max_frames:
    pick = np.linspace(0, len(active) - 1, max_frames).round().astype(int)
    active = [active[i] for i in pick]
  return [f"step {s + 1}/{steps}: " + frame(pieces, revealed_at, s, color) for s in active]


def html_replay(samples: list[dict], title: str = "dlm sampling replay") -> str:
  """A standalone page replaying each sample: `samples` holds dicts with `pieces`,
  `revealed_at`, `steps` and `label` (any text: it is escaped in the script block)."""
  data = json.dumps([{"pieces": s["pieces"], "at": [int(a) for a in s["revealed_at"]],
                      "steps": int(s["steps"]), "label": s["label"]} for s in samples])
  # Inside <script> a piece such as '</script>' or '<!--' would end or derail the block: every
  # '<', '>' and '&' becomes a JSON escape, which parses to the same data.
  data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
  return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
.sample {{ white-space: pre-wrap; font-family: monospace; border: 1px solid #ccc;
          padding: 0.8em; margin: 0.5em 0 1.5em; line-height: 1.5; }}
.mask {{ color: #bbb; }} .new {{ background: #b6f2b6; }} .given {{ color: #777; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p><button id="play">play</button> step <input id="step" type="range" min="-1" value="-1">
<span id="label"></span></p>
<div id="samples"></div>
<script>
const DATA = {data};
const slider = document.getElementById('step');
const steps = Math.max(...DATA.map(s => s.steps));
slider.max = steps - 1;
function esc(t) {{ const d = document.createElement('span'); d.textContent = t; return d.innerHTML; }}
function draw() {{
  const k = parseInt(slider.value);
  document.getElementById('label').textContent = (k + 1) + ' / ' + steps;
  document.getElementById('samples').innerHTML = DATA.map(s =>
    '<h3>' + esc(s.label) + '</h3><div class="sample">' + s.pieces.map((p, i) => {{
      const a = s.at[i];
      if (a < 0) return '<span class="given">' + esc(p) + '</span>';
      if (a > k) return '<span class="mask">\\u2592</span>';
      return a === k ? '<span class="new">' + esc(p) + '</span>' : esc(p);
    }}).join('') + '</div>').join('');
}}
slider.oninput = draw;
document.getElementById('play').onclick = () => {{
  slider.value = -1; draw();
  const timer = setInterval(() => {{
    if (parseInt(slider.value) >= steps - 1) {{ clearInterval(timer); return; }}
    slider.value = parseInt(slider.value) + 1; draw();
  }}, Math.max(20, 4000 / steps));
}};
draw();
</script></body></html>
"""
