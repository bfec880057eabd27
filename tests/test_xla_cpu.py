"""Tests of the XLA:CPU workarounds: `loop_conv` and `sixteen_bit_residuals`
compute the values and gradients of the plain operations."""

import jax
import jax.numpy as jnp
import numpy as np

from adanet_jax.model import xla_cpu

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _conv_grads(conv, strides, padding):
  """Value and (input, kernel) gradients of a weighted sum of `conv`'s output."""
  x = jax.random.normal(jax.random.key(0), (3, 6, 6, 4))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, 5))
  weights = jax.random.normal(
      jax.random.key(2),
      conv(x, kernel, strides, padding, dimension_numbers=_NHWC).shape,
  )

  def loss(x, kernel):
    return jnp.sum(
        weights * conv(x, kernel, strides, padding, dimension_numbers=_NHWC)
    )

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, kernel)


def test_loop_conv_has_the_values_and_gradients_of_lax_conv():
  for strides, padding in (
      ((1, 1), ((1, 1), (1, 1))),
      ((1, 1), ((0, 2), (2, 0))),
  ):
    value, (dx, dk) = _conv_grads(xla_cpu.loop_conv, strides, padding)
    want_value, (want_dx, want_dk) = _conv_grads(
        jax.lax.conv_general_dilated, strides, padding
    )
    # the forward pass is the same conv
    np.testing.assert_array_equal(value, want_value)
    # The gradients are other convolutions of the same numbers: summed in
    # another order, equal up to float rounding.
    np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dk, want_dk, rtol=1e-5, atol=1e-5)
  # A strided convolution is passed on unchanged.
  got = _conv_grads(xla_cpu.loop_conv, (2, 2), ((1, 1), (1, 1)))
  want = _conv_grads(jax.lax.conv_general_dilated, (2, 2), ((1, 1), (1, 1)))
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(g, w)


def _scan_grads(body):
  """Gradients of a bfloat16 scan of `body` (over 5 weight slices), and the
  dtypes of the stacked residuals its forward scan hands the backward one."""
  w = jax.random.normal(jax.random.key(2), (5, 8, 8), jnp.bfloat16)
  x = jax.random.normal(jax.random.key(3), (4, 8), jnp.bfloat16)

  def loss(x, w):
    y, _ = jax.lax.scan(body, x, w)
    return jnp.sum(y.astype(jnp.float32) ** 2)

  grad = jax.grad(loss, argnums=(0, 1))
  scans = [
      e for e in jax.make_jaxpr(grad)(x, w).eqns if e.primitive.name == 'scan'
  ]
  stacked = {
      str(v.aval.dtype) for v in scans[0].outvars if v.aval.shape[:1] == (5,)
  }
  return jax.jit(grad)(x, w), stacked


def test_sixteen_bit_residuals_are_stacked_as_bits_with_the_same_gradients():
  def body(x, w):
    return jnp.tanh(x @ w) * x, None

  (dx, dw), stacked = _scan_grads(xla_cpu.sixteen_bit_residuals(body))
  (want_dx, want_dw), want_stacked = _scan_grads(body)
  assert (
      'bfloat16' in want_stacked
      and 'bfloat16' not in stacked
      and 'uint16' in stacked
  )
  np.testing.assert_array_equal(
      np.asarray(dx, np.float32), np.asarray(want_dx, np.float32)
  )
  np.testing.assert_array_equal(
      np.asarray(dw, np.float32), np.asarray(want_dw, np.float32)
  )
