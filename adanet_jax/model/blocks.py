"""The residual blocks of ConvNet-AIG: basic, bottleneck and pre-activation
(wide) blocks, each with its gate on the block input, and the convolution and
BatchNorm they share with the stem.

A block returns `(x, (z, prob, logits))`: its output and its gate's decision
`z` (the value the residual branch is multiplied by), execution probability
and logits.
"""

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from adanet_jax.model import norm
from adanet_jax.model.gate import Gate

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
