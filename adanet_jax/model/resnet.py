"""Gated residual networks: the CIFAR ResNet family, ImageNet ResNets and wide
ResNets, each with a ConvNet-AIG gate on every residual block (or none).

The model is written for one device and knows no axis names. It returns
`(logits, aux)`: `aux['gates']` holds the value each block's residual branch
was multiplied by (batch, blocks), `aux['probs']` the gates' execution
probabilities and `aux['logits']` (batch, blocks, 2) the gates' logits (skip,
execute); losses and metrics read them from there.

Compile time: a ResNet-110 has 17 identical blocks after the first of each
stage. Unrolled, XLA compiles each of them (tens of seconds on a CPU); so runs
of at least `ResNet.scan_min_run` consecutive identical blocks are applied by
one `jax.lax.scan` over their variables, stacked at apply time. The variables
stay per block (`stage{s}_block{i}`): checkpoints do not depend on it, and
the scanned model computes what the unrolled one does (the same Gumbel noise,
hard decisions, BatchNorm updates and gradients, up to float rounding).
"""

import functools
import itertools
from typing import Any, Callable, Sequence

from flax.core.scope import LazyRng
import flax.linen as nn
import jax
import jax.numpy as jnp

from adanet_jax.model import norm
from adanet_jax.model.gate import Gate, check_gate_mode, torch_bias_init

# PyTorch's default conv/linear init (the reference CIFAR model keeps it) and He
# fan-out normal (the reference ImageNet model).
CONV_INITS = {
    'torch': nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'),
    'he_fan_out': nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
}


def conv(features, kernel, strides, init, dtype, name, conv_fn=None):
  """Bias-free square conv with PyTorch's symmetric padding of (kernel-1)/2.

  `conv_fn` replaces `lax.conv_general_dilated` (None: that one).
  """
  pad = (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=CONV_INITS[init], dtype=dtype, name=name,
                 conv_general_dilated=conv_fn)


_NHWC = ('NHWC', 'HWIO', 'NHWC')


def loop_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
              dimension_numbers=None, **kwargs):
  """`lax.conv_general_dilated` for the convolutions of blocks inside a loop.

  XLA:CPU runs a convolution fast (Eigen) only in its canonical layout
  (NHWC input, HWIO kernel, NHWC output), and rewrites other convolutions
  into that layout only outside loops. The gradients of a convolution are
  convolutions in other layouts; inside `lax.scan` they stayed naive loops
  that made a ResNet-110 train step take minutes. Here the gradients are
  written as canonical convolutions of transposed operands, as that rewrite
  would. Stride-1 undilated 2D convolutions (all that scanned blocks have) take
  this path; anything else is passed on unchanged.
  """
  plain = (lhs.ndim == 4 and not isinstance(padding, str)
           and all(s == 1 for s in window_strides)
           and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
           and kwargs.get('feature_group_count', 1) == 1 and kwargs.get('precision') is None)
  if not plain:
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                        rhs_dilation, dimension_numbers, **kwargs)
  return _canonical_conv(lhs, rhs, tuple(tuple(p) for p in padding))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _canonical_conv(x, kernel, padding):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_NHWC)


def _canonical_conv_fwd(x, kernel, padding):
  return _canonical_conv(x, kernel, padding), (x, kernel)


def _canonical_conv_bwd(padding, residuals, dy):
  x, kernel = residuals
  # Input gradient: the spatially flipped kernel with in/out swapped, over dy.
  flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
  full = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel.shape[:2], padding)]
  dx = jax.lax.conv_general_dilated(dy, flipped, (1, 1), full, dimension_numbers=_NHWC)
  # Kernel gradient: a convolution over the batch, the channels of x as its
  # "batch" and dy as its kernel.
  dk = jax.lax.conv_general_dilated(jnp.transpose(x, (3, 1, 2, 0)),
                                    jnp.transpose(dy, (1, 2, 0, 3)), (1, 1), padding,
                                    dimension_numbers=_NHWC)
  return dx.astype(x.dtype), jnp.transpose(dk, (1, 2, 0, 3)).astype(kernel.dtype)


_canonical_conv.defvjp(_canonical_conv_fwd, _canonical_conv_bwd)


def batch_norm(train, dtype, name, scale_init=nn.initializers.ones):
  """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5)."""
  return norm.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=dtype, scale_init=scale_init, name=name)


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
  in_loop: bool = False  # runs inside a lax.scan: convolutions through `loop_conv`

  def conv(self, features, kernel, strides=1, name=None):
    return conv(features, kernel, strides, self.conv_init, self.dtype, name,
                loop_conv if self.in_loop else None)

  def norm(self, train, name=None):
    return batch_norm(train, self.dtype, name, self.bn_scale_init)

  def gate(self, x, train, gate_mode, temperature=None):
    """Returns (z, prob, logits), (batch,) x 2 and (batch, 2).

    Ungated and fixed blocks give z = prob = 1 and logits (0, +inf), the logits
    of a gate that always executes (sigmoid(l1 - l0) = 1, argmax 1).
    """
    ones = jnp.ones((x.shape[0],), jnp.float32)
    always = jnp.broadcast_to(jnp.asarray([0.0, jnp.inf], jnp.float32), (x.shape[0], 2))
    if not self.gated:
      return ones, ones, always
    gate = Gate(hidden=self.gate_hidden, hidden_kernel_init=CONV_INITS[self.conv_init],
                temperature=self.temperature, bn_scale_init=self.gate_bn_scale_init,
                name='gate')
    if self.fixed:
      # A fixed block always runs. Its gate still exists, so parameter counts
      # and checkpoint layout equal the reference model's whatever is fixed.
      if self.is_initializing():
        gate(x, train=train, mode='deterministic')
      return ones, ones, always
    return gate(x, train=train, mode=gate_mode, temperature=temperature)

  @staticmethod
  def apply_gate(z, branch):
    return branch * z.astype(branch.dtype)[:, None, None, None]


class BasicBlock(BlockContext):
  """Post-activation basic block: relu(shortcut(x) + z * bn(conv(relu(bn(conv(x))))))."""
  features: int = 16
  strides: int = 1

  @nn.compact
  def __call__(self, x, *, train: bool, gate_mode: str, temperature=None):
    z, prob, logits = self.gate(x, train, gate_mode, temperature)
    y = nn.relu(self.norm(train, 'bn1')(self.conv(self.features, 3, self.strides, 'conv1')(x)))
    y = self.norm(train, 'bn2')(self.conv(self.features, 3, 1, 'conv2')(y))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = self.norm(train, 'shortcut_bn')(
          self.conv(self.features, 1, self.strides, 'shortcut_conv')(x))
    return nn.relu(shortcut + self.apply_gate(z, y)), (z, prob, logits)


class Bottleneck(BlockContext):
  """Post-activation bottleneck (1x1, 3x3 with the stride, 1x1 to 4x width)."""
  features: int = 64
  strides: int = 1
  expansion: int = 4

  @nn.compact
  def __call__(self, x, *, train: bool, gate_mode: str, temperature=None):
    z, prob, logits = self.gate(x, train, gate_mode, temperature)
    out_features = self.features * self.expansion
    y = nn.relu(self.norm(train, 'bn1')(self.conv(self.features, 1, 1, 'conv1')(x)))
    y = nn.relu(self.norm(train, 'bn2')(self.conv(self.features, 3, self.strides, 'conv2')(y)))
    y = self.norm(train, 'bn3')(self.conv(out_features, 1, 1, 'conv3')(y))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out_features:
      shortcut = self.norm(train, 'shortcut_bn')(
          self.conv(out_features, 1, self.strides, 'shortcut_conv')(x))
    return nn.relu(shortcut + self.apply_gate(z, y)), (z, prob, logits)


class PreActBlock(BlockContext):
  """Wide-ResNet block: x' = shortcut + z * conv(relu(bn(conv(relu(bn(x)))))).

  The gate reads the block input x, as in the other blocks.
  """
  features: int = 16
  strides: int = 1

  @nn.compact
  def __call__(self, x, *, train: bool, gate_mode: str, temperature=None):
    z, prob, logits = self.gate(x, train, gate_mode, temperature)
    pre = nn.relu(self.norm(train, 'bn1')(x))
    y = self.conv(self.features, 3, self.strides, 'conv1')(pre)
    y = self.conv(self.features, 3, 1, 'conv2')(nn.relu(self.norm(train, 'bn2')(y)))
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
      (every block of a stage but the first, split where `fixed` changes)
      run under one `lax.scan`; shorter runs, and all blocks when None, run
      unrolled. Init always runs unrolled (it creates the per-block
      variables). Short runs gain little compile time, and XLA's cost
      analysis counts a loop body once, so small models stay unrolled.
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
  scan_min_run: int | None = 6

  @property
  def num_blocks(self) -> int:
    return sum(self.stage_sizes)

  @nn.compact
  def __call__(self, x, *, train: bool, gate_mode: str = 'deterministic', temperature=None):
    """Returns (logits float32 (batch, classes), aux dict of (batch, blocks)).

    `temperature` (a number or an array) replaces the gates' attribute for
    this call, so that it can be a runtime value of the train step.
    """
    check_gate_mode(gate_mode)
    ctx = dict(conv_init=self.conv_init, dtype=self.dtype, bn_scale_init=self.bn_scale_init,
               gate_bn_scale_init=self.gate_bn_scale_init)
    x = x.astype(self.dtype)
    if self.stem == 'imagenet':
      x = conv(self.stem_width, 7, 2, self.conv_init, self.dtype, 'stem_conv')(x)
      x = nn.relu(batch_norm(train, self.dtype, 'stem_bn', self.bn_scale_init)(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = conv(self.stem_width, 3, 1, self.conv_init, self.dtype, 'stem_conv')(x)
      if self.stem == 'cifar':
        x = nn.relu(batch_norm(train, self.dtype, 'stem_bn', self.bn_scale_init)(x))
    call = dict(train=train, gate_mode=gate_mode, temperature=temperature)
    gate_outputs = []  # per block, its (z, prob, logits)
    index = 0
    for stage, (size, width) in enumerate(zip(self.stage_sizes, self.stage_widths)):
      blocks = []
      for i in range(size):
        strides = 2 if (i == 0 and stage > 0) else 1
        blocks.append((f'stage{stage + 1}_block{i}', dict(
            features=width, strides=strides, gated=self.gated,
            fixed=index in self.fixed_blocks, gate_hidden=self.gate_hidden,
            temperature=self.temperature, **ctx)))
        index += 1
      for run in _identical_runs(blocks):
        if self.scan_min_run and len(run) >= self.scan_min_run and not self.is_initializing():
          x, run_outputs = self._scan_run(run, x, call)
          gate_outputs.extend(run_outputs)
          continue
        for name, attributes in run:
          x, gate_out = BLOCKS[self.block](name=name, **attributes)(x, **call)
          gate_outputs.append(gate_out)
    if self.stem == 'wrn':
      x = nn.relu(batch_norm(train, self.dtype, 'final_bn', self.bn_scale_init)(x))
    x = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_classes, kernel_init=CONV_INITS['torch'],
                      bias_init=torch_bias_init(x.shape[-1]), dtype=self.dtype, name='head')(x)
    zs, probs, gate_logits = zip(*gate_outputs)
    aux = {'gates': jnp.stack(zs, axis=1), 'probs': jnp.stack(probs, axis=1),
           'logits': jnp.stack(gate_logits, axis=1)}
    return logits.astype(jnp.float32), aux

  def _scan_run(self, run, x, call):
    """Applies identical blocks `run` [(name, attributes)] to x under one lax.scan.

    Each block's variables are read by its name, stacked for the scan, and
    mutable collections (BatchNorm statistics in training) are written back
    by name, so the variable tree is the unrolled model's.

    Returns:
      (x after the run, [per block, its (z, prob, logits)]).
    """
    names = [name for name, _ in run]
    template = BLOCKS[self.block](**run[0][1], in_loop=True, parent=None)
    variables = self.variables
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[
        {col: tree[name] for col, tree in variables.items() if name in tree} for name in names])
    mutable = [col for col in stacked if self.is_mutable_collection(col)]
    keys = None
    if (call['gate_mode'] == 'sample' and template.gated and not template.fixed
        and self.has_rng('gumbel')):
      keys = jnp.stack([self._gate_key(name) for name in names])

    def body(x, slices):
      block_variables, key = slices
      with nn.intercept_methods(functools.partial(_draw_from, key=key)):
        out = template.apply(block_variables, x, mutable=mutable or False, **call)
      (x, gate_out), updates = out if mutable else (out, {})
      return x, (gate_out, updates)

    if jnp.dtype(self.dtype).itemsize == 2:
      body = sixteen_bit_residuals(body)
    x, (run_outputs, updates) = jax.lax.scan(body, x, (stacked, keys))
    for i, name in enumerate(names):
      for col, tree in updates.items():
        self.put_variable(col, name, jax.tree.map(lambda leaf: leaf[i], tree))
    return x, [tuple(out[i] for out in run_outputs) for i in range(len(names))]

  def _gate_key(self, name):
    """The key the gate of child block `name` draws its Gumbel noise from.

    Flax folds a scope's path into its rng when a key is made: the gate of
    block `name` makes its first (and only) key under path (name, 'gate')
    with counter 1. The scanned template has no such path, so that key is
    made here and handed to its gate (`_draw_from`).
    """
    return LazyRng.create(self.scope.rngs['gumbel'], name, 'gate', 1).as_jax_rng()


def _identical_runs(blocks):
  """Splits a stage's [(name, attributes)] into runs of identical blocks.

  The first block of a stage may change the shape (stride, projection), so it
  runs alone; the others keep it and differ at most in `fixed`.
  """
  yield blocks[:1]
  for _, run in itertools.groupby(blocks[1:], key=lambda block: block[1]):
    yield list(run)


def sixteen_bit_residuals(fn):
  """`fn` (arrays to arrays) with the same values and gradients, whose
  16-bit float residuals are kept as uint16 bits.

  A scan stacks its body's residuals for the backward pass, one
  dynamic-update-slice per step. XLA:CPU runs a bfloat16 one in float32: it
  converts the whole stack there and back at every step (ResNet-110, bf16:
  0.94 s of a 4.9 s step). The bits of uint16 are stored in place.
  """
  def pack(x):
    is_half = isinstance(x, jax.Array) and x.dtype in (jnp.bfloat16, jnp.float16)
    return (jax.lax.bitcast_convert_type(x, jnp.uint16), x.dtype) if is_half else (x, None)

  @jax.custom_vjp
  def wrapped(*args):
    return fn(*args)

  def forward(*args):
    out, vjp_fn = jax.vjp(fn, *args)
    leaves, tree = jax.tree.flatten(vjp_fn)
    packed, dtypes = zip(*map(pack, leaves)) if leaves else ((), ())
    return out, (list(packed), _Static((tree, dtypes)))

  def backward(residuals, cotangent):
    packed, static = residuals
    tree, dtypes = static.value
    leaves = [x if dtype is None else jax.lax.bitcast_convert_type(x, dtype)
              for x, dtype in zip(packed, dtypes)]
    return jax.tree.unflatten(tree, leaves)(cotangent)

  wrapped.defvjp(forward, backward)
  return wrapped


@jax.tree_util.register_static
class _Static:
  """A value carried through a pytree as structure, not as leaves."""

  def __init__(self, value):
    self.value = value

  def __eq__(self, other):
    return isinstance(other, _Static) and self.value == other.value

  def __hash__(self):
    return 0  # equal values must hash alike; these are rarely hashed


def _draw_from(next_fun, args, kwargs, context, *, key):
  """Method interceptor: a Gate called inside makes its Gumbel key `key`."""
  module = context.module
  if key is not None and isinstance(module, Gate) and context.method_name == '__call__':
    make_rng = module.make_rng
    # Instance attribute over the Module method: only this call's Gate sees it.
    object.__setattr__(module, 'make_rng',
                       lambda name='params': key if name == 'gumbel' else make_rng(name))
  return next_fun(*args, **kwargs)
