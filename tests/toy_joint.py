"""A known joint distribution over length-3 sequences of 3 symbols ([MASK] = 3) and its exact
conditionals p(x_l | unmasked tokens of z): the ground truth for the NELBO and sampler tests.
`length=` gives the same over longer sequences (the any-order tests use length 5)."""

import itertools

import jax.numpy as jnp
import numpy as np

VOCAB, LENGTH, MASK = 3, 3, 3
CODES = 4 ** jnp.arange(LENGTH - 1, -1, -1)  # z (batch, LENGTH) -> row of the table


def codes(length: int) -> jnp.ndarray:
  return 4 ** jnp.arange(length - 1, -1, -1)


def joint(seed: int, concentration: float, length: int = LENGTH):
  rng = np.random.default_rng(seed)
  seqs = np.array(list(itertools.product(range(VOCAB), repeat=length)), np.int32)
  return seqs, rng.dirichlet(np.full(len(seqs), concentration))


def conditional_table(seqs, p, floor: float = -np.inf) -> jnp.ndarray:
  """table[code(z), l, v] = log p(x_l = v | unmasked tokens of z); `floor` where impossible."""
  length = seqs.shape[1]
  table = np.full((4**length, length, VOCAB + 1), floor, np.float32)
  for code, z in enumerate(itertools.product(range(VOCAB + 1), repeat=length)):
    z = np.array(z)
    ok = np.all((z == MASK) | (seqs == z), axis=1)
    for l in range(length):
      for v in range(VOCAB):
        mass = p[ok & (seqs[:, l] == v)].sum()
        if mass > 0:
          table[code, l, v] = np.log(mass / p[ok].sum())
  return jnp.asarray(table)
