"""Gated residual networks: the CIFAR ResNet family, ImageNet ResNets and wide
ResNets, each with a ConvNet-AIG gate on every residual block (or none).

The model is written for one device and knows no axis names. It returns
`(logits, aux)`: `aux['gates']` holds the value each block's residual branch
was multiplied by (batch, blocks), `aux['probs']` the gates' execution
probabilities and `aux['logits']` (batch, blocks, 2) the gates' logits (skip,
execute); losses and metrics read them from there. The blocks are in
`model/blocks.py`. Randomness is an argument:
block i's gate draws from `block_key(key, i)` of the call's `key`. Runs of
identical blocks may run as one loop for compile time (`scan_min_run`,
`model/scan.py`); the variables stay per block (`stage{s}_block{i}`) either way.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adanet_jax.model import scan
from adanet_jax.model.blocks import BLOCKS, CONV_INITS, batch_norm, conv
from adanet_jax.model.gate import check_gate_mode, torch_bias_init


class ResNet(nn.Module):
  """A gated ResNet.

  Attributes:
    block: 'basic', 'bottleneck' or 'preact'.
    stage_sizes: blocks per stage.
    stage_widths: block `features` per stage.
    stem: 'cifar' (3x3 conv, BN, ReLU), 'imagenet' (7x7/2 conv, BN, ReLU,
      3x3/2 max-pool) or 'wrn' (a bare 3x3 conv; the blocks pre-activate).
    stem_width: output channels of the stem conv.
    num_classes: classes of the linear head.
    gated: gates on (ConvNet-AIG) or off (the plain ResNet).
    fixed_blocks: indices of blocks that always execute.
    conv_init: key of CONV_INITS.
    gate_hidden, temperature: see `Gate`.
    bn_scale_init, gate_bn_scale_init: gamma init of the backbone's and the
      gates' BatchNorms (`norm.gamma_inits`).
    dtype: compute dtype (parameters stay float32).
    scan_min_run: runs of at least this many consecutive identical blocks
      (a stage's blocks but the first, split where `fixed` changes) run as one
      `lax.scan` (`scan.scan_blocks`); 0: none. Init runs unrolled.
    loop_conv_fn: the convolution of scanned blocks (None: lax's).
    scan_body_wrapper: wraps the loop body of scanned runs (None: nothing).
  """

  block: str
  stage_sizes: Sequence[int]
  stage_widths: Sequence[int]
  stem: str = 'cifar'
  stem_width: int = 16
  num_classes: int = 10
  gated: bool = True
  fixed_blocks: Sequence[int] = ()
  conv_init: str = 'torch'
  gate_hidden: int = 16
  temperature: float = 1.0
  bn_scale_init: Callable = nn.initializers.ones
  gate_bn_scale_init: Callable = nn.initializers.ones
  dtype: Any = jnp.float32
  scan_min_run: int = 0
  loop_conv_fn: Callable | None = None
  scan_body_wrapper: Callable | None = None

  @property
  def num_blocks(self) -> int:
    return sum(self.stage_sizes)

  @nn.compact
  def __call__(
      self,
      x,
      *,
      train: bool,
      gate_mode: str = 'deterministic',
      key=None,
      temperature=None,
  ):
    """Returns (logits float32 (batch, classes), aux dict of (batch, blocks)).

    `key`: of the gates' Gumbel noise, needed in gate mode 'sample'.
    `temperature` (a number or an array) replaces the gates' attribute for
    this call, so that it can be a runtime value of the train step.
    """
    check_gate_mode(gate_mode)
    x = self.stem_layers(x.astype(self.dtype), train)
    call = dict(train=train, gate_mode=gate_mode, temperature=temperature)
    keys = [
        None if key is None else block_key(key, i)
        for i in range(self.num_blocks)
    ]
    shared = dict(
        gated=self.gated,
        gate_hidden=self.gate_hidden,
        temperature=self.temperature,
        conv_init=self.conv_init,
        dtype=self.dtype,
        bn_scale_init=self.bn_scale_init,
        gate_bn_scale_init=self.gate_bn_scale_init,
    )
    gate_outputs = []  # per block, its (z, prob, logits)
    for stage, (size, width) in enumerate(
        zip(self.stage_sizes, self.stage_widths)
    ):
      first = len(gate_outputs)  # index of the stage's first block
      blocks = [
          (
              f'stage{stage + 1}_block{i}',
              dict(
                  shared,
                  features=width,
                  strides=2 if (i == 0 and stage > 0) else 1,
                  fixed=first + i in self.fixed_blocks,
              ),
          )
          for i in range(size)
      ]
      for run in scan.identical_runs(blocks):
        run_keys = keys[len(gate_outputs) : len(gate_outputs) + len(run)]
        if (
            self.scan_min_run
            and len(run) >= self.scan_min_run
            and not self.is_initializing()
        ):
          x, outputs = scan.scan_blocks(
              self,
              BLOCKS[self.block],
              dict(run[0][1], conv_fn=self.loop_conv_fn),
              [name for name, _ in run],
              x,
              run_keys,
              call,
              self.scan_body_wrapper,
          )
          gate_outputs.extend(outputs)
          continue
        for (name, attributes), gate_key in zip(run, run_keys):
          x, gate_out = BLOCKS[self.block](name=name, **attributes)(
              x, key=gate_key, **call
          )
          gate_outputs.append(gate_out)
    if self.stem == 'wrn':
      x = nn.relu(
          batch_norm(train, self.dtype, 'final_bn', self.bn_scale_init)(x)
      )
    x = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(
        self.num_classes,
        kernel_init=CONV_INITS['torch'],
        bias_init=torch_bias_init(x.shape[-1]),
        dtype=self.dtype,
        name='head',
    )(x)
    zs, probs, gate_logits = (jnp.stack(v, axis=1) for v in zip(*gate_outputs))
    return logits.astype(jnp.float32), {
        'gates': zs,
        'probs': probs,
        'logits': gate_logits,
    }

  def stem_layers(self, x, train):
    """The layers before the first block."""
    if self.stem == 'imagenet':
      x = conv(self.stem_width, 7, 2, self.conv_init, self.dtype, 'stem_conv')(
          x
      )
      x = nn.relu(
          batch_norm(train, self.dtype, 'stem_bn', self.bn_scale_init)(x)
      )
      return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    x = conv(self.stem_width, 3, 1, self.conv_init, self.dtype, 'stem_conv')(x)
    if self.stem == 'cifar':
      x = nn.relu(
          batch_norm(train, self.dtype, 'stem_bn', self.bn_scale_init)(x)
      )
    return x


def block_key(key: jax.Array, index: int) -> jax.Array:
  """The key of block `index`'s gate (its Gumbel noise), from the model's key."""
  return jax.random.fold_in(key, index)
