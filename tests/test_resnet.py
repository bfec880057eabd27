"""Tests of the ResNet's scanned runs of identical blocks: the same logits,
gates, BatchNorm updates and gradients as the unrolled model, with the same
per-block variable tree, for gated, partly fixed and ungated models of each
block family."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adanet_jax.model import resnet


def _model(block, stages=3, **kwargs):
  """A small model of `block`s: 3 stages (2 for bottlenecks) or fewer."""
  sizes = {'basic': (4, 4, 4), 'preact': (3, 3, 3), 'bottleneck': (1, 3)}[block][:stages]
  widths = {'basic': (4, 8, 16), 'preact': (4, 8, 16), 'bottleneck': (2, 4)}[block][:stages]
  stem = {'basic': 'cifar', 'preact': 'wrn', 'bottleneck': 'imagenet'}[block]
  return resnet.ResNet(block=block, stage_sizes=sizes, stage_widths=widths, stem=stem,
                       stem_width=4, **kwargs)


def _images(size):
  return jax.random.normal(jax.random.key(1), (6, size, size, 3))


def _train(model, variables, x, gate_mode):
  """Loss, (logits, aux, updated batch_stats) and gradients of one train pass."""

  def loss_fn(params):
    (logits, aux), updates = model.apply(
        {'params': params, 'batch_stats': variables['batch_stats']}, x, train=True,
        gate_mode=gate_mode, rngs={'gumbel': jax.random.key(7)}, mutable=['batch_stats'])
    # The gates enter the loss, so their straight-through gradient is compared too.
    loss = jnp.mean(jax.nn.log_softmax(logits)[:, 0]) + jnp.mean(aux['probs'] * aux['gates'])
    return loss, (logits, aux, updates['batch_stats'])

  return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables['params'])


def _assert_trees_close(got, want):
  """Equal structure; leaves equal up to float rounding (most are bit for bit)."""
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(w).max())))


@pytest.mark.timeout(300)
@pytest.mark.parametrize('block,kwargs,gate_mode,size', [
    # Fixed blocks 1 and 2 split stage 1's run: [1, 2] scanned, [3] unrolled.
    ('basic', dict(fixed_blocks=(1, 2)), 'sample', 8),
    ('basic', dict(gated=False), 'sample', 8),
    ('preact', {}, 'sample', 8),
    ('bottleneck', {}, 'expected', 16),
])
def test_scanned_runs_equal_unrolled_model(block, kwargs, gate_mode, size):
  # Two stages: a run in each, one of them after a downsampling block (the
  # unrolled model's backward pass is what takes the compile time).
  unrolled = _model(block, stages=2, scan_min_run=None, **kwargs)
  scanned = _model(block, stages=2, scan_min_run=2, **kwargs)
  x = _images(size)
  variables = unrolled.init({'params': jax.random.key(0)}, x, train=False)
  # The same variable tree whichever way the blocks run: checkpoints load.
  assert (jax.tree.structure(scanned.init({'params': jax.random.key(0)}, x, train=False))
          == jax.tree.structure(variables))
  (loss, (logits, aux, stats)), grads = _train(scanned, variables, x, gate_mode)
  (want_loss, (want_logits, want_aux, want_stats)), want_grads = _train(
      unrolled, variables, x, gate_mode)
  # Same Gumbel noise per block: the same hard decisions.
  np.testing.assert_array_equal(aux['gates'], want_aux['gates'])
  if kwargs.get('gated', True) and gate_mode == 'sample':
    assert 0 < float(want_aux['gates'].mean()) < 1  # decisions that differ
  _assert_trees_close((loss, logits, aux, stats, grads),
                      (want_loss, want_logits, want_aux, want_stats, want_grads))
  # Every block's statistics moved, the fixed blocks' gates' excepted.
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, variables['batch_stats'])
  assert moved['stage2_block1']['bn1']['mean'] and moved['stage2_block2']['bn2']['var']
  if 'fixed_blocks' in kwargs:
    assert not moved['stage1_block1']['gate']['fc1_bn']['mean']
    assert moved['stage1_block3']['gate']['fc1_bn']['mean']


def test_scanned_inference_equals_unrolled_and_uses_one_loop_per_run():
  unrolled, scanned = _model('basic', scan_min_run=None), _model('basic', scan_min_run=3)
  x = _images(8)
  variables = unrolled.init({'params': jax.random.key(0)}, x, train=False)
  forward = lambda model: jax.jit(lambda v: model.apply(v, x, train=False))
  logits, aux = forward(scanned)(variables)
  want_logits, want_aux = forward(unrolled)(variables)
  np.testing.assert_array_equal(aux['gates'], want_aux['gates'])
  _assert_trees_close((logits, aux), (want_logits, want_aux))
  assert aux['gates'].shape == (6, 12)
  # Blocks 1-3 of each stage form a run of 3: one scan per stage.
  count = lambda model: str(jax.make_jaxpr(lambda v: model.apply(v, x, train=False))(
      variables)).count('scan[')
  assert (count(scanned), count(unrolled)) == (3, 0)
  assert count(_model('basic', scan_min_run=4)) == 0


def _scan_grads(body):
  """Gradients of a bfloat16 scan of `body` (over 5 weight slices), and the
  dtypes of the stacked residuals its forward scan hands the backward one."""
  w = jax.random.normal(jax.random.key(2), (5, 8, 8), jnp.bfloat16)
  x = jax.random.normal(jax.random.key(3), (4, 8), jnp.bfloat16)

  def loss(x, w):
    y, _ = jax.lax.scan(body, x, w)
    return jnp.sum(y.astype(jnp.float32) ** 2)

  grad = jax.grad(loss, argnums=(0, 1))
  scans = [e for e in jax.make_jaxpr(grad)(x, w).eqns if e.primitive.name == 'scan']
  stacked = {str(v.aval.dtype) for v in scans[0].outvars if v.aval.shape[:1] == (5,)}
  return jax.jit(grad)(x, w), stacked


def test_sixteen_bit_residuals_are_stacked_as_bits_with_the_same_gradients():
  def body(x, w):
    return jnp.tanh(x @ w) * x, None

  (dx, dw), stacked = _scan_grads(resnet.sixteen_bit_residuals(body))
  (want_dx, want_dw), want_stacked = _scan_grads(body)
  assert 'bfloat16' in want_stacked and 'bfloat16' not in stacked and 'uint16' in stacked
  np.testing.assert_array_equal(np.asarray(dx, np.float32), np.asarray(want_dx, np.float32))
  np.testing.assert_array_equal(np.asarray(dw, np.float32), np.asarray(want_dw, np.float32))
