"""Workarounds for XLA:CPU in scanned blocks, applied only on the CPU backend.

`model.factory.create_model` hands them to the ResNet when it scans on a CPU
(`ResNet.loop_conv_fn`, `ResNet.scan_body_wrapper`); they compute what the
plain operations do, only in a form XLA:CPU runs fast inside a loop.
"""

import functools

import jax
import jax.numpy as jnp

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def loop_conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    **kwargs
):
  """`lax.conv_general_dilated` for the convolutions of blocks inside a loop.

  XLA:CPU runs a convolution fast only in its canonical layout (NHWC input,
  HWIO kernel, NHWC output) and rewrites other layouts into it only outside
  loops, so the gradients of a convolution (convolutions in other layouts)
  stayed naive loops inside `lax.scan`. Here they are written as canonical
  convolutions of transposed operands, as that rewrite would. Stride-1
  undilated 2D convolutions (all that scanned blocks have) take this path;
  anything else is passed on unchanged.
  """
  plain = (
      lhs.ndim == 4
      and not isinstance(padding, str)
      and all(s == 1 for s in window_strides)
      and all(
          d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))
      )
      and kwargs.get('feature_group_count', 1) == 1
      and kwargs.get('precision') is None
  )
  if not plain:
    return jax.lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        **kwargs
    )
  return _canonical_conv(lhs, rhs, tuple(tuple(p) for p in padding))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _canonical_conv(x, kernel, padding):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), padding, dimension_numbers=_NHWC
  )


def _canonical_conv_fwd(x, kernel, padding):
  return _canonical_conv(x, kernel, padding), (x, kernel)


def _canonical_conv_bwd(padding, residuals, dy):
  x, kernel = residuals
  # Input gradient: the spatially flipped kernel with in/out swapped, over dy.
  flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
  full = [
      (k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel.shape[:2], padding)
  ]
  dx = jax.lax.conv_general_dilated(
      dy, flipped, (1, 1), full, dimension_numbers=_NHWC
  )
  # Kernel gradient: a convolution over the batch, the channels of x as its
  # "batch" and dy as its kernel.
  dk = jax.lax.conv_general_dilated(
      jnp.transpose(x, (3, 1, 2, 0)),
      jnp.transpose(dy, (1, 2, 0, 3)),
      (1, 1),
      padding,
      dimension_numbers=_NHWC,
  )
  return dx.astype(x.dtype), jnp.transpose(dk, (1, 2, 0, 3)).astype(
      kernel.dtype
  )


_canonical_conv.defvjp(_canonical_conv_fwd, _canonical_conv_bwd)


def sixteen_bit_residuals(fn):
  """`fn` (arrays to arrays) with the same values and gradients, whose
  16-bit float residuals are kept as uint16 bits.

  A scan stacks its body's residuals for the backward pass, one
  dynamic-update-slice per step, and XLA:CPU runs a bfloat16 one in float32,
  converting the whole stack there and back at every step; the bits of
  uint16 are stored in place.
  """

  def pack(x):
    is_half = isinstance(x, jax.Array) and x.dtype in (
        jnp.bfloat16,
        jnp.float16,
    )
    return (
        (jax.lax.bitcast_convert_type(x, jnp.uint16), x.dtype)
        if is_half
        else (x, None)
    )

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
    leaves = [
        x if dtype is None else jax.lax.bitcast_convert_type(x, dtype)
        for x, dtype in zip(packed, dtypes)
    ]
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
