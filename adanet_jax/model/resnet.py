"""Gated residual networks: the CIFAR ResNet family, ImageNet ResNets and wide
ResNets, each with a ConvNet-AIG gate on every residual block (or none).

The model is written for one device and knows no axis names. It returns
`(logits, aux)`: `aux['gates']` holds the value each block's residual branch
was multiplied by (batch, blocks), `aux['probs']` the gates' execution
probabilities and `aux['logits']` (batch, blocks, 2) the gates' logits (skip,
execute); losses and metrics read them from there. Randomness is an argument:
block i's gate draws from `block_key(key, i)` of the call's `key`. Runs of
identical blocks may run as one loop for compile time (`scan_min_run`,
`model/scan.py`); the variables stay per block (`stage{s}_block{i}`) either way.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adanet_jax.model import norm, scan
from adanet_jax.model.gate import Gate, check_gate_mode, torch_bias_init

# PyTorch's default conv/linear init (the reference CIFAR model keeps it) and He
# fan-out normal (the reference ImageNet model).
CONV_INITS = {
    'torch': nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'),
    'he_fan_out': nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
}


def conv(features, kernel, strides, init, dtype, name, conv_fn=None):
  """Bias-free square conv, PyTorch's padding (kernel-1)/2; `conv_fn` replaces lax's."""
  pad = (kernel - 1) // 2
  return nn.Conv(
      features,
      (kernel, kernel),
      strides=(strides, strides),
      padding=((pad, pad), (pad, pad)),
      use_bias=False,
      kernel_init=CONV_INITS[init],
      dtype=dtype,
      name=name,
      conv_general_dilated=conv_fn,
  )


def batch_norm(train, dtype, name, scale_init=nn.initializers.ones):
  """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5)."""
  return norm.BatchNorm(
      use_running_average=not train,
      momentum=0.9,
      epsilon=1e-5,
      dtype=dtype,
      scale_init=scale_init,
      name=name,
  )


class BlockContext(nn.Module):
  """Shared parts of every block: convs, BatchNorm, the gate and its use."""

  conv_init: str = 'torch'
  dtype: Any = jnp.float32
  gated: bool = True
  fixed: bool = False
  gate_hidden: int = 16
  temperature: float = 1.0
  bn_scale_init: Callable = nn.initializers.ones
  gate_bn_scale_init: Callable = nn.initializers.ones
  conv_fn: Callable | None = (
      None  # replaces lax.conv_general_dilated (None: that one)
  )

  def conv(self, features, kernel, strides=1, name=None):
    return conv(
        features,
        kernel,
        strides,
        self.conv_init,
        self.dtype,
        name,
        self.conv_fn,
    )

  def norm(self, train, name=None):
    return batch_norm(train, self.dtype, name, self.bn_scale_init)

  def gate(self, x, train, gate_mode, key=None, temperature=None):
    """Returns (z, prob, logits), (batch,) x 2 and (batch, 2).

    Ungated and fixed blocks give z = prob = 1 and logits (0, +inf), the logits
    of a gate that always executes (sigmoid(l1 - l0) = 1, argmax 1).
    """
    ones = jnp.ones((x.shape[0],), jnp.float32)
    always = jnp.broadcast_to(
        jnp.asarray([0.0, jnp.inf], jnp.float32), (x.shape[0], 2)
    )
    if not self.gated:
      return ones, ones, always
    gate = Gate(
        hidden=self.gate_hidden,
        hidden_kernel_init=CONV_INITS[self.conv_init],
        temperature=self.temperature,
        bn_scale_init=self.gate_bn_scale_init,
        name='gate',
    )
    if self.fixed:
      # A fixed block always runs. Its gate still exists, so parameter counts
      # and checkpoint layout equal the reference model's whatever is fixed.
      if self.is_initializing():
        gate(x, train=train, mode='deterministic')
      return ones, ones, always
    return gate(
        x, train=train, mode=gate_mode, key=key, temperature=temperature
    )

  @staticmethod
  def apply_gate(z, branch):
    return branch * z.astype(branch.dtype)[:, None, None, None]


class BasicBlock(BlockContext):
  """Post-activation basic block: relu(shortcut(x) + z * bn(conv(relu(bn(conv(x))))))."""

  features: int = 16
  strides: int = 1

  @nn.compact
  def __call__(
      self, x, *, train: bool, gate_mode: str, key=None, temperature=None
  ):
    z, prob, logits = self.gate(x, train, gate_mode, key, temperature)
    y = nn.relu(
        self.norm(train, 'bn1')(
            self.conv(self.features, 3, self.strides, 'conv1')(x)
        )
    )
    y = self.norm(train, 'bn2')(self.conv(self.features, 3, 1, 'conv2')(y))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = self.norm(train, 'shortcut_bn')(
          self.conv(self.features, 1, self.strides, 'shortcut_conv')(x)
      )
    return nn.relu(shortcut + self.apply_gate(z, y)), (z, prob, logits)


class Bottleneck(BlockContext):
  """Post-activation bottleneck (1x1, 3x3 with the stride, 1x1 to 4x width)."""

  features: int = 64
  strides: int = 1
  expansion: int = 4

  @nn.compact
  def __call__(
      self, x, *, train: bool, gate_mode: str, key=None, temperature=None
  ):
    z, prob, logits = self.gate(x, train, gate_mode, key, temperature)
    out_features = self.features * self.expansion
    y = nn.relu(
        self.norm(train, 'bn1')(self.conv(self.features, 1, 1, 'conv1')(x))
    )
    y = nn.relu(
        self.norm(train, 'bn2')(
            self.conv(self.features, 3, self.strides, 'conv2')(y)
        )
    )
    y = self.norm(train, 'bn3')(self.conv(out_features, 1, 1, 'conv3')(y))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out_features:
      shortcut = self.norm(train, 'shortcut_bn')(
          self.conv(out_features, 1, self.strides, 'shortcut_conv')(x)
      )
    return nn.relu(shortcut + self.apply_gate(z, y)), (z, prob, logits)


class PreActBlock(BlockContext):
  """Wide-ResNet block: x' = shortcut + z * conv(relu(bn(conv(relu(bn(x)))))), gate on x."""

  features: int = 16
  strides: int = 1

  @nn.compact
  def __call__(
      self, x, *, train: bool, gate_mode: str, key=None, temperature=None
  ):
    z, prob, logits = self.gate(x, train, gate_mode, key, temperature)
    pre = nn.relu(self.norm(train, 'bn1')(x))
    y = self.conv(self.features, 3, self.strides, 'conv1')(pre)
    y = self.conv(self.features, 3, 1, 'conv2')(
        nn.relu(self.norm(train, 'bn2')(y))
    )
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = self.conv(self.features, 1, self.strides, 'shortcut_conv')(pre)
    return shortcut + self.apply_gate(z, y), (z, prob, logits)


BLOCKS = {'basic': BasicBlock, 'bottleneck': Bottleneck, 'preact': PreActBlock}


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
