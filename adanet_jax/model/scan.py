"""Consecutive identical residual blocks applied by one `jax.lax.scan`.

A ResNet-110 has 17 identical blocks after the first of each stage; unrolled,
XLA compiles each of them. `scan_blocks` applies such a run as one loop over
the blocks' variables, stacked at apply time from the parent's per-block
entries (`stage{s}_block{i}`), and writes the mutable collections (BatchNorm
statistics in training) back per block, so the variable tree is the unrolled
model's and checkpoints do not depend on the choice. Each block's key is a
scanned input, so a block draws what it draws unrolled.

Flax's `nn.scan` would hold a run's variables stacked under one name, a tree
other than the unrolled model's; hence this module, on public APIs only
(`Module.variables`, `Module.put_variable`, `Module.apply`, `lax.scan`).
"""

import itertools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def identical_runs(blocks: Sequence[tuple[str, dict]]):
  """Splits a stage's [(name, attributes)] into runs of identical blocks.

  The first block of a stage may change the shape (stride, projection), so it
  runs alone; the others keep it and differ at most in their attributes
  (`fixed`).
  """
  yield list(blocks[:1])
  for _, run in itertools.groupby(blocks[1:], key=lambda block: block[1]):
    yield list(run)


def scan_blocks(
    parent: nn.Module,
    block_class: type,
    attributes: dict,
    names: Sequence[str],
    x: jax.Array,
    keys: Sequence[jax.Array | None],
    call: dict,
    body_wrapper: Callable | None = None,
):
  """Applies the blocks `names` of `parent`, each `block_class(**attributes)`, in turn.

  Args:
    parent: the bound module whose variables hold one entry per block name.
    block_class: the blocks' module class; a block is called as
      `block(x, key=key, **call)` and returns (x, outputs).
    attributes: the attributes every block of the run has.
    names: the blocks' names under `parent`, in order.
    x: the input of the first block.
    keys: per block its key (all None: no block gets one).
    call: the other keyword arguments of the blocks' call.
    body_wrapper: applied to the loop body (arrays to arrays) if given, e.g. a
      backend's workaround.

  Returns:
    (the last block's x, [per block, its outputs]).
  """
  template = block_class(**attributes, parent=None)
  variables = parent.variables
  stacked = jax.tree.map(
      lambda *leaves: jnp.stack(leaves),
      *[
          {col: tree[name] for col, tree in variables.items() if name in tree}
          for name in names
      ]
  )
  mutable = [col for col in stacked if parent.is_mutable_collection(col)]

  def body(x, slices):
    block_variables, key = slices
    out = template.apply(
        block_variables, x, key=key, mutable=mutable or False, **call
    )
    (x, outputs), updates = out if mutable else (out, {})
    return x, (outputs, updates)

  if body_wrapper is not None:
    body = body_wrapper(body)
  x, (outputs, updates) = jax.lax.scan(
      body, x, (stacked, None if keys[0] is None else jnp.stack(keys))
  )
  for i, name in enumerate(names):
    for col, tree in updates.items():
      parent.put_variable(col, name, jax.tree.map(lambda leaf: leaf[i], tree))
  return x, [
      jax.tree.map(lambda leaf: leaf[i], outputs) for i in range(len(names))
  ]
