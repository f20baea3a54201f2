"""Automatic micro-batching: `train.grad_accum=0` (the default) chooses the micro-batches per
step from XLA's memory estimate of the compiled step and the platform.

The update does not depend on the choice (dlm/train/step.py accumulates exactly), only the
step's speed and memory do:
- CPU: XLA:CPU allocates the step's temporaries afresh at every execution and the kernel
  zeroes every page of them; smaller micro-batches also keep a layer's activations in cache.
  The step is split until its temporaries per micro-batch fit `CPU_TEMP_BYTES`, a figure
  measured on this project's 2-core CPU with `bench/train_throughput.py` (docs/BENCHMARKS.md),
  tokens/s by micro-batches:
    md4's shape (6 x 256, length 256, batch 32, 2.1 GB of temporaries at 1):
      1: 3,036-3,091, 4: 3,413, 8: 3,408-3,523, 16: 3,131 (8 chosen);
    the earlier quickstart's (`configs/quickstart.py:bpe`: 4 x 128, length 128, batch 32,
    0.39 GB at 1):
      1: 10,031, 2: 11,691, 4: 11,873 (2 chosen).
  Both optima sit at 1-2k tokens per micro-batch.
- GPU / TPU: one micro-batch while the estimate fits `DEVICE_FRACTION` of the device's
  memory, else the fewest that fit (the estimate of k micro-batches taken as the parameters'
  and optimizer's fixed bytes plus 1/k of the temporaries; the chosen k is compiled, not
  checked again).

The choice costs one extra compile when it is not 1. It is made on the first batch (lowering
reads only shapes and shardings), so the data position is never disturbed.
"""

from __future__ import annotations

import sys
from typing import Callable

import jax

CPU_TEMP_BYTES = 384 << 20
DEVICE_FRACTION = 0.85


def divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def estimate(compiled) -> tuple[int, int] | None:
  """(temporary bytes, fixed bytes: arguments + outputs - aliased) of a compiled step per
  device, or None where the backend gives no estimate."""
  try:
    m = compiled.memory_analysis()
    fixed = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
    return int(m.temp_size_in_bytes), int(fixed)
  except (AttributeError, NotImplementedError, TypeError):
    return None


def device_memory(device) -> int | None:
  """Bytes the device can hold (GPU / TPU), None where it does not say (CPU)."""
  stats = device.memory_stats() or {}
  return stats.get("bytes_limit")


def choose(compile_with: Callable[[int], object], rows_per_device: int, platform: str,
           memory: int | None) -> tuple[int, object, str]:
  """(micro-batches, the step compiled for them, why): `compile_with(k)` compiles the step
  for k micro-batches; k divides the rows each device holds."""
  first = compile_with(1)
  sizes = estimate(first)
  if sizes is None:
    return 1, first, "no memory estimate on this backend"
  temp, fixed = sizes
  if platform == "cpu":
    budget, what = CPU_TEMP_BYTES, f"temporaries per micro-batch <= {CPU_TEMP_BYTES >> 20} MiB"
  elif memory:
    budget = DEVICE_FRACTION * memory - fixed
    what = f"estimate <= {DEVICE_FRACTION:.0%} of the device's {memory / 2**30:.1f} GiB"
  else:
    return 1, first, "the device reports no memory size"
  options = divisors(rows_per_device)
  k = next((d for d in options if temp / d <= budget), options[-1])
  why = f"XLA's estimate {temp / 2**30:.2f} GiB of temporaries at 1; {what}"
  return k, (first if k == 1 else compile_with(k)), why


def choose_for(compile_with: Callable[[int], object], batch_sharding,
               batch_shape) -> tuple[int, object, str]:
  """`choose` for a global batch of `batch_shape` on `batch_sharding`: the rows each device
  holds, and the platform and memory of one of this process's devices (in a multi-process run
  another process's device is not ours to ask)."""
  device = next(d for d in batch_sharding.mesh.devices.flat
                if d.process_index == jax.process_index())
  return choose(compile_with, batch_sharding.shard_shape(batch_shape)[0], device.platform,
                device_memory(device))


class AutoStep:
  """A train step that chooses its micro-batches on its first call (`choose`), then runs the
  step compiled for them. `make_step(k)` is the jitted step for k micro-batches."""

  def __init__(self, make_step: Callable[[int], Callable], batch_sharding, verbose: bool):
    self.make_step, self.batch_sharding, self.verbose = make_step, batch_sharding, verbose
    self.accum, self._compiled = None, None

  def __call__(self, state, batch):
    if self._compiled is None:
      self.accum, self._compiled, why = choose_for(
          lambda k: self.make_step(k).lower(state, batch).compile(), self.batch_sharding,
          batch["tokens"].shape)
      if self.verbose:
        print(f"dlm: {self.accum} micro-batch{'es' if self.accum > 1 else ''} per step "
              f"(train.grad_accum=0: automatic; {why})", file=sys.stderr)
    return self._compiled(state, batch)


def is_automatic(train_cfg) -> bool:
  return train_cfg.grad_accum == 0

