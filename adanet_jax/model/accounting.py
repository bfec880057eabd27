"""Compute accounting: exact multiply-accumulates per image given the gates.

Units: 1 MAC = one multiply-add; FLOPs = 2 x MACs. MACs count convolutions and
dense layers (BatchNorm, ReLU, additions and pooling are not MACs; the gates'
global pooling is reported apart as `gate_pool_adds`). The table is read off
the model itself by tracing one image through it, so it follows any model
change without a second description of the architecture.
"""

import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adanet_jax.model.gate import Gate

_BLOCK_NAME = re.compile(r'^stage\d+_block\d+$')


@dataclasses.dataclass(frozen=True)
class CostTable:
  """MACs per image of each part of a model.

  Attributes:
    blocks: the blocks' names, in execution order (the order of every
      per-block tuple and of the gates in `aux`).
    outside: stem and head (always run).
    branch: per block, its residual branch (run only when the gate opens).
    shortcut: per block, its projection shortcut (always run; 0 if identity).
    gate: per block, its gate MLP (0 for fixed blocks and ungated models).
    gate_pool_adds: per block, additions of the gate's global pooling.
  """

  blocks: tuple[str, ...]
  outside: int
  branch: tuple[int, ...]
  shortcut: tuple[int, ...]
  gate: tuple[int, ...]
  gate_pool_adds: tuple[int, ...]

  @property
  def always(self) -> int:
    """MACs every image costs whatever the gates decide."""
    return self.outside + sum(self.shortcut) + sum(self.gate)

  @property
  def dense(self) -> int:
    """MACs with every block executed (gates included)."""
    return self.always + sum(self.branch)

  @property
  def baseline(self) -> int:
    """MACs of the same backbone without gates, every block executed."""
    return self.dense - sum(self.gate)

  def per_image(self, executed) -> np.ndarray:
    """Exact MACs given which branches ran: `executed` (batch, blocks) of 0/1
    gives MACs per image; a (blocks,) vector of execution rates gives the
    mean MACs per image."""
    return self.always + np.asarray(executed, np.float64) @ np.asarray(
        self.branch, np.float64
    )

  def paper_convention(self, executed) -> float:
    """The paper's count: baseline MACs x mean fraction of blocks executed."""
    return self.baseline * float(np.mean(executed))


def executed_branches(gates, gate_mode: str):
  """Which residual branches were computed (1.0) or skipped (0.0), given the
  gate values `gates` (..., blocks) of a forward pass in `gate_mode`: in
  'expected' mode every branch runs (scaled by its probability), otherwise
  exactly those whose hard gate is 1. Works on numpy and JAX arrays."""
  if gate_mode == 'expected':
    return gates * 0 + 1
  return (gates != 0) * 1.0


def cost_table(
    model: nn.Module,
    image_shape: tuple[int, int, int],
    count_padding: bool = True,
) -> CostTable:
  """Traces one image of `image_shape` (H, W, C) through `model` abstractly.

  Gate decisions do not change shapes, so one abstract pass (no compute)
  finds every conv and dense layer with its input and output sizes.

  Args:
    model: a `resnet.ResNet`.
    image_shape: (H, W, C) of one input image.
    count_padding: True counts every kernel tap, zero padding included (the
      convention of the paper and of the usual ResNet counts); False counts
      only taps that land on real pixels, as XLA's cost analysis does.
  """
  block_index: dict[str, int] = {}
  parts = {key: {} for key in ('branch', 'shortcut', 'gate', 'gate_pool_adds')}
  outside = [0]

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name != '__call__':
      return out
    path = module.path
    block = next((name for name in path if _BLOCK_NAME.match(name)), None)
    if block is not None:
      block_index.setdefault(block, len(block_index))
    if isinstance(module, Gate):
      parts['gate_pool_adds'][block] = int(np.prod(args[0].shape[1:]))
    if not isinstance(module, (nn.Conv, nn.Dense)):
      return out
    macs = _layer_macs(module, args[0], out, count_padding)
    if block is None:
      outside[0] += macs
      return out
    kind = (
        'gate'
        if 'gate' in path
        else 'shortcut'
        if 'shortcut' in path[-1]
        else 'branch'
    )
    parts[kind][block] = parts[kind].get(block, 0) + macs
    return out

  x = jnp.zeros((1, *image_shape), jnp.float32)
  # Unrolled, every layer is called under its block's path; a scanned run's
  # template has none.
  model = model.clone(scan_min_run=0)

  def trace():
    variables = model.init({'params': jax.random.key(0)}, x, train=False)
    with nn.intercept_methods(interceptor):
      model.apply(variables, x, train=False, gate_mode='deterministic')

  jax.eval_shape(trace)
  order = sorted(block_index, key=block_index.get)
  per_block = {k: tuple(v.get(b, 0) for b in order) for k, v in parts.items()}
  return CostTable(blocks=tuple(order), outside=outside[0], **per_block)


def _layer_macs(module, x, y, count_padding: bool) -> int:
  if isinstance(module, nn.Dense):
    return int(x.shape[-1] * y.shape[-1])
  channels = x.shape[-1] * y.shape[-1] // module.feature_group_count
  if count_padding:
    return int(np.prod(y.shape[1:-1]) * np.prod(module.kernel_size) * channels)
  taps = 1
  for size, kernel, stride, (pad, _) in zip(
      x.shape[1:-1], module.kernel_size, module.strides, module.padding
  ):
    taps *= sum(
        0 <= i * stride - pad + j < size
        for i in range((size + 2 * pad - kernel) // stride + 1)
        for j in range(kernel)
    )
  return int(taps * channels)
