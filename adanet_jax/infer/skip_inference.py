"""Inference that really skips the residual blocks whose gate is closed.

The masked model (`resnet.ResNet`, the training path) computes every residual
branch and multiplies it by the gate's 0/1: the savings exist only on paper.
Here a closed block is not computed at all. XLA needs static shapes, and a
`lax.cond` under `vmap` runs both branches, so the decision is made per block
for the whole batch, outside any vmap:

- all samples closed (every closed block at batch 1): only the shortcut runs;
- all samples open: the block runs on the whole batch, as in the masked model;
- a mix: the open samples are gathered to the front of the batch and the
  block runs on them in chunks of a static size (by default 1/8 of the
  batch), as many chunks as they fill, in a loop with that trip count; the
  rows are scattered back over the block's output with the branch left out,
  relu(shortcut(x)) (post-activation blocks) or shortcut(x) (pre-activation).
  At most one chunk is partly wasted. The block is compiled once for the
  whole batch and once for a chunk, whatever the count, because compiling it
  once per possible buffer size (1/8, 2/8, ... of the batch) multiplied the
  compile time for little run time (figures: README, "Skipping closed blocks
  for real"). On a GPU the loop's trip count, like the switch's index, is
  read by the host.

`lax.switch` on the number of open samples picks one of these, so only the
chosen one runs. In inference BatchNorm uses its running averages, one sample
at a time, so a block computed on a compacted buffer gives each sample exactly
what it gives in the full batch.

Nothing about a block is described twice: the skipping path runs the model's
own modules, with the same parameter and batch_stats trees (any checkpoint of
the masked model works). `nn.intercept_methods` takes over each gated block's
call inside `model.apply`, and the block is rebuilt in two variants from its
own attributes: open (`gated=False`, the branch always added) and closed (its
`apply_gate` returns zeros, so the branch is dead code that XLA removes and
only the gate and the shortcut remain). Fixed blocks and ungated models run
as usual.

  logits, aux = skip_apply(model, variables, images)   # jitted; model is static
  aux['gates'], aux['probs']                           # (batch, blocks), as the masked model

Only `gate_mode='deterministic'` can skip: `expected` runs every block scaled by
its probability, and `sample` draws Gumbel noise from a key, which the
skipping path takes none of.
"""

import dataclasses
import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adanet_jax.errors import ConfigError
from adanet_jax.model import blocks, resnet
from adanet_jax.model.gate import Gate, check_gate_mode

# The open samples of a mixed batch run in chunks of ceil(batch / CHUNKS)
# rows: at most one chunk per block is partly computed in vain (1/8 of the
# batch at most). Fewer chunks waste more; more run smaller convolutions.
DEFAULT_CHUNKS = 8

_BLOCK_CLASSES = tuple(blocks.BLOCKS.values())


@functools.partial(jax.jit, static_argnames=('model', 'gate_mode', 'chunks'))
def skip_apply(
    model: resnet.ResNet,
    variables,
    images: jax.Array,
    gate_mode: str = 'deterministic',
    chunks: int = DEFAULT_CHUNKS,
):
  """The masked model's inference forward pass, computing only executed blocks.

  Args:
    model: a `resnet.ResNet` (static: one compilation per model and shape).
    variables: {'params', 'batch_stats'} of the masked model.
    images: (batch, H, W, C).
    gate_mode: must be 'deterministic'; any other mode raises ConfigError.
    chunks: the open samples of a batch whose samples disagree run in chunks
      of ceil(batch / chunks) rows.

  Returns:
    (logits float32 (batch, classes), aux) with aux['gates'] and aux['probs']
    of shape (batch, blocks), equal to `model.apply(variables, images,
    train=False, gate_mode='deterministic')` up to float rounding.
  """
  check_skip_mode(gate_mode)
  interceptor = functools.partial(_skip_closed_blocks, chunks=chunks)
  with nn.intercept_methods(interceptor):
    return model.apply(variables, images, train=False, gate_mode=gate_mode)


def check_skip_mode(gate_mode: str) -> None:
  """Raises ConfigError unless blocks can be skipped in `gate_mode`."""
  check_gate_mode(gate_mode)
  if gate_mode != 'deterministic':
    raise ConfigError(
        f"skipping closed blocks needs gate_mode='deterministic', got {gate_mode!r}: "
        "in 'expected' mode every block runs, scaled by its execution probability, and "
        "'sample' mode draws Gumbel noise, which the skipping path does not; run "
        'the masked model (skip=False) for those modes'
    )


def _skip_closed_blocks(next_fun, args, kwargs, context, *, chunks):
  """Method interceptor: runs each gated block of the applied ResNet skipping."""
  block = context.module
  # Only the ResNet's own blocks, its children or the template of a scanned
  # run (`resnet.ResNet.scan_min_run`): the rebuilt variants below are open
  # (ungated) or of a closed subclass, and must run as written.
  if (
      context.method_name != '__call__'
      or type(block) not in _BLOCK_CLASSES
      or not block.gated
      or block.fixed
  ):
    return next_fun(*args, **kwargs)
  x = args[0]
  variables = block.variables
  closed = _closed_class(type(block))(**_attributes(block))
  opened = block.clone(parent=None, gated=False)

  def output(module):
    return lambda xs: module.apply(
        variables, xs, train=False, gate_mode='deterministic'
    )[0]

  # The closed variant's output is unused here, so XLA keeps only its gate.
  _, gate_out = closed.apply(
      variables, x, train=False, gate_mode='deterministic'
  )
  return (
      run_where_open(
          gate_out[0] > 0, x, output(opened), output(closed), chunks
      ),
      gate_out,
  )


def run_where_open(
    is_open: jax.Array,
    x: jax.Array,
    run_open: Callable,
    run_closed: Callable,
    chunks: int = DEFAULT_CHUNKS,
) -> jax.Array:
  """Row i of the result is run_open(x)[i] if is_open[i], else run_closed(x)[i].

  Both functions must treat rows independently. `run_open` runs only on the
  open rows, in chunks of ceil(batch / chunks) (the last one padded with
  zero rows whose results are dropped), and not at all when none is open;
  `run_closed` runs on the whole batch unless every row is open. One
  `lax.switch` picks the case (none, some, all open), so only it is computed.

  Args:
    is_open: (batch,) bool.
    x: (batch, ...) input of both functions.
    run_open, run_closed: row-wise functions of x with equal output shapes.
    chunks: how many chunks the batch is cut into for the open rows.

  Returns:
    The combined output, shaped like run_open(x).
  """
  if chunks < 1:
    raise ValueError(f'chunks must be at least 1, got {chunks}')
  batch = x.shape[0]
  size = -(-batch // chunks)  # rows per chunk
  count = jnp.sum(is_open, dtype=jnp.int32)
  if batch == 1:  # no mix: the block runs or not
    return jax.lax.cond(count == 0, run_closed, run_open, x)

  def some_open(x):
    capacity = -(-batch // size) * size
    # Open row indices first; the tail points past the batch: its gathered
    # rows are zeros and its results are dropped.
    rows = jnp.nonzero(is_open, size=capacity, fill_value=batch)[0]
    packed = x.at[rows].get(mode='fill', fill_value=0)

    def run_chunk(i, out):
      chunk_rows = jax.lax.dynamic_slice_in_dim(rows, i * size, size)
      computed = run_open(jax.lax.dynamic_slice_in_dim(packed, i * size, size))
      return out.at[chunk_rows].set(computed, mode='drop')

    return jax.lax.fori_loop(
        0, (count + size - 1) // size, run_chunk, run_closed(x)
    )

  index = jnp.where(count == 0, 0, jnp.where(count == batch, 2, 1))
  return jax.lax.switch(index, [run_closed, some_open, run_open], x)


@functools.cache
def _closed_class(block_class: type) -> type:
  """`block_class` whose gate is closed for every sample.

  Every block adds its residual branch through `apply_gate`; returning zeros
  there leaves the branch's result unused, so XLA drops its convolutions and
  the block computes only its gate and its shortcut.
  """
  return type(
      f'Closed{block_class.__name__}',
      (block_class,),
      {'apply_gate': staticmethod(lambda z, branch: jnp.zeros_like(branch))},
  )


def _attributes(module: nn.Module) -> dict:
  """The dataclass attributes of a Flax module, without its place in a tree."""
  return {
      f.name: getattr(module, f.name)
      for f in dataclasses.fields(module)
      if f.init and f.name not in ('parent', 'name')
  }


def set_open_counts(
    model: resnet.ResNet,
    variables,
    images: jax.Array,
    open_counts: Sequence[int],
) -> dict:
  """Shifts gate biases so that exactly `open_counts[l]` of `images` run block l.

  For tests and benchmarks of the skipping path: it makes gate patterns of
  any mix (all open, all closed, any count in between) on given images. One
  forward pass of the masked model sets the blocks in order, each on the
  input that the already-set blocks produce: block l's "execute" bias is
  lowered by the midpoint between the k-th and (k+1)-th largest of its logit
  differences (k = open_counts[l]), or put 1 beyond the extreme one when k is
  0 or the batch, so no decision sits on the threshold.

  Args:
    model: a gated `resnet.ResNet`.
    variables: its {'params', 'batch_stats'}; not modified.
    images: (batch, H, W, C) the counts refer to.
    open_counts: one count in [0, batch] per block; entries of fixed blocks
      are ignored (they always run).

  Returns:
    New variables, equal to `variables` except the gates' `fc2` biases.
  """
  shifts = _threshold_shifts(
      model, variables, images, jnp.asarray(open_counts, jnp.int32)
  )
  params = dict(variables['params'])
  for block, shift in shifts.items():
    fc2 = params[block]['gate']['fc2']
    fc2 = {**fc2, 'bias': fc2['bias'] - jnp.array([0.0, 1.0]) * shift}
    params[block] = {
        **params[block],
        'gate': {**params[block]['gate'], 'fc2': fc2},
    }
  return {**variables, 'params': params}


@functools.partial(jax.jit, static_argnames='model')
def _threshold_shifts(model, variables, images, open_counts):
  """{block name: shift of its "execute" logit giving open_counts[block]}."""
  shifts, index = {}, [-1]

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    if isinstance(module, _BLOCK_CLASSES) and isinstance(
        module.parent, resnet.ResNet
    ):
      index[
          0
      ] += 1  # blocks run in order: this is the block's column in aux['gates']
    logits = next_fun(*args, **kwargs)
    if module.name != 'fc2' or not isinstance(module.parent, Gate):
      return logits
    diff = jnp.sort(logits[:, 1] - logits[:, 0])[::-1]
    k = open_counts[index[0]]
    middle = (
        diff[jnp.maximum(k - 1, 0)] + diff[jnp.minimum(k, len(diff) - 1)]
    ) / 2
    shift = jnp.where(
        k == 0, diff[0] + 1, jnp.where(k == len(diff), diff[-1] - 1, middle)
    )
    shifts[module.parent.parent.name] = shift
    return logits.at[:, 1].add(-shift)

  with nn.intercept_methods(interceptor):
    # Unrolled: blocks are counted and named as the ResNet's children.
    model.clone(scan_min_run=0).apply(
        variables, images, train=False, gate_mode='deterministic'
    )
  return shifts
