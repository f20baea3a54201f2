"""Attention implementations agree: `xla` against `cudnn` (GPU flash attention) on the same
backbone and weights, bfloat16, with two segments per row. Prints one JSON line.

  python bench/attention_check.py
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
from flax import nnx

from dlm.models.transformer import Transformer, TransformerConfig


def main():
  cfg = TransformerConfig(vocab_size=512, width=256, depth=2, heads=4, dtype="bfloat16")
  graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
  leaves, tree = jax.tree.flatten(nnx.to_pure_dict(state))
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [0.05 * jax.random.normal(k, x.shape)
                                     for k, x in zip(keys, leaves)])
  rng = jax.random.PRNGKey(0)
  tokens = jax.random.randint(rng, (4, 256), 0, 512)
  segments = jnp.concatenate([jnp.ones((4, 100), jnp.int32), 2 * jnp.ones((4, 156), jnp.int32)],
                             axis=1)
  t = jax.random.uniform(rng, (4, 256))
  out = {"bench": "attention_check", "device": jax.devices()[0].device_kind}
  for kind in ("bidirectional", "causal"):
    results = {}
    for impl in ("xla", "cudnn"):
      c = dataclasses.replace(cfg, attention=kind, attention_impl=impl)
      model = nnx.merge(nnx.split(Transformer(c, nnx.Rngs(0)))[0], params)
      try:
        results[impl] = jax.jit(lambda m: m(tokens, t, segments))(model)
      except Exception as e:  # report, do not hide: cuDNN may refuse a mask
        out[f"{kind}_{impl}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    if len(results) == 2:
      out[f"{kind}_max_abs_diff"] = float(jnp.abs(results["xla"] - results["cudnn"]).max())
      out[f"{kind}_max_abs"] = float(jnp.abs(results["xla"]).max())
  print(json.dumps(out))


if __name__ == "__main__":
  main()
