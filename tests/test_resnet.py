"""Tests of the ResNet's keys and scanned runs of identical blocks: block i's
gate draws from `block_key(key, i)`, scanned or unrolled; scanned runs give
the same gates and, up to float rounding, the same logits, BatchNorm updates
and gradients as the unrolled model, with the same per-block variable tree,
for gated, partly fixed and ungated models of each block family."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adanet_jax.model import gate, resnet, xla_cpu


def _model(block, stages=3, **kwargs):
  """A small model of `block`s: 3 stages (2 for bottlenecks) or fewer."""
  sizes = {'basic': (4, 4, 4), 'preact': (3, 3, 3), 'bottleneck': (1, 3)}[
      block
  ][:stages]
  widths = {'basic': (4, 8, 16), 'preact': (4, 8, 16), 'bottleneck': (2, 4)}[
      block
  ][:stages]
  stem = {'basic': 'cifar', 'preact': 'wrn', 'bottleneck': 'imagenet'}[block]
  return resnet.ResNet(
      block=block,
      stage_sizes=sizes,
      stage_widths=widths,
      stem=stem,
      stem_width=4,
      **kwargs
  )


def _images(size):
  return jax.random.normal(jax.random.key(1), (6, size, size, 3))


def _train(model, variables, x, gate_mode):
  """Loss, (logits, aux, updated batch_stats) and gradients of one train pass."""

  def loss_fn(params):
    (logits, aux), updates = model.apply(
        {'params': params, 'batch_stats': variables['batch_stats']},
        x,
        train=True,
        gate_mode=gate_mode,
        key=jax.random.key(7),
        mutable=['batch_stats'],
    )
    # The gates enter the loss, so their straight-through gradient is compared too.
    loss = jnp.mean(jax.nn.log_softmax(logits)[:, 0]) + jnp.mean(
        aux['probs'] * aux['gates']
    )
    return loss, (logits, aux, updates['batch_stats'])

  return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables['params'])


def _assert_trees_close(got, want):
  """Equal structure; leaves equal up to float rounding (most are bit for bit).

  Not exactly equal: XLA fuses a loop body's operations (BatchNorm, the
  residual sums) otherwise than the unrolled graph's, which changes the last
  bits of some float results (logits differ by about one float32 ulp).
  """
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    # always-open gates have logit +inf
    finite = np.abs(np.asarray(w)[np.isfinite(w)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    'block,kwargs,gate_mode,size',
    [
        # Fixed blocks 1 and 2 split stage 1's run: [1, 2] scanned, [3] unrolled.
        ('basic', dict(fixed_blocks=(1, 2)), 'sample', 8),
        ('basic', dict(gated=False), 'sample', 8),
        ('preact', {}, 'sample', 8),
        ('bottleneck', {}, 'expected', 16),
    ],
)
def test_scanned_runs_equal_unrolled_model(block, kwargs, gate_mode, size):
  # Two stages: a run in each, one of them after a downsampling block (the
  # unrolled model's backward pass is what takes the compile time).
  unrolled = _model(block, stages=2, scan_min_run=0, **kwargs)
  # As the factory builds it on XLA:CPU.
  scanned = _model(
      block, stages=2, scan_min_run=2, loop_conv_fn=xla_cpu.loop_conv, **kwargs
  )
  x = _images(size)
  variables = unrolled.init({'params': jax.random.key(0)}, x, train=False)
  # The same variable tree whichever way the blocks run: checkpoints load.
  assert jax.tree.structure(
      scanned.init({'params': jax.random.key(0)}, x, train=False)
  ) == jax.tree.structure(variables)
  (loss, (logits, aux, stats)), grads = _train(scanned, variables, x, gate_mode)
  (want_loss, (want_logits, want_aux, want_stats)), want_grads = _train(
      unrolled, variables, x, gate_mode
  )
  # Same Gumbel noise per block: the same hard decisions.
  np.testing.assert_array_equal(aux['gates'], want_aux['gates'])
  if kwargs.get('gated', True) and gate_mode == 'sample':
    assert 0 < float(want_aux['gates'].mean()) < 1  # decisions that differ
  _assert_trees_close(
      (loss, logits, aux, stats, grads),
      (want_loss, want_logits, want_aux, want_stats, want_grads),
  )
  # Every block's statistics moved, the fixed blocks' gates' excepted.
  moved = jax.tree.map(
      lambda a, b: bool(jnp.any(a != b)), stats, variables['batch_stats']
  )
  assert (
      moved['stage2_block1']['bn1']['mean']
      and moved['stage2_block2']['bn2']['var']
  )
  if 'fixed_blocks' in kwargs:
    assert not moved['stage1_block1']['gate']['fc1_bn']['mean']
    assert moved['stage1_block3']['gate']['fc1_bn']['mean']


def _forward(model, variables, x):
  """The inference pass in gate mode 'sample', compiled once, a function of the key."""
  return jax.jit(
      lambda key: model.apply(
          variables, x, train=False, gate_mode='sample', key=key
      )
  )


def test_scanned_inference_equals_unrolled_and_uses_one_loop_per_run():
  unrolled, scanned = _model('basic', scan_min_run=0), _model(
      'basic', scan_min_run=3
  )
  x = _images(8)
  variables = unrolled.init({'params': jax.random.key(0)}, x, train=False)
  logits, aux = _forward(scanned, variables, x)(jax.random.key(3))
  want_logits, want_aux = _forward(unrolled, variables, x)(jax.random.key(3))
  np.testing.assert_array_equal(aux['gates'], want_aux['gates'])
  _assert_trees_close((logits, aux), (want_logits, want_aux))
  assert aux['gates'].shape == (6, 12)

  # Blocks 1-3 of each stage form a run of 3: one scan per stage.
  def count(model):
    return str(
        jax.make_jaxpr(lambda v: model.apply(v, x, train=False))(variables)
    ).count('scan[')

  assert (count(scanned), count(unrolled)) == (3, 0)
  assert count(_model('basic', scan_min_run=4)) == 0


def test_block_gates_draw_from_their_block_keys_scanned_or_unrolled():
  unrolled, scanned = _model('basic', scan_min_run=0), _model(
      'basic', scan_min_run=3
  )
  x = _images(8)
  variables = unrolled.init({'params': jax.random.key(0)}, x, train=False)
  run_unrolled, run_scanned = _forward(unrolled, variables, x), _forward(
      scanned, variables, x
  )
  key, other = jax.random.key(3), jax.random.key(4)
  _, aux = run_unrolled(key)
  # Block i's gate decides on gumbel_noise(block_key(key, i)), the public rule.
  noise = jnp.stack(
      [gate.gumbel_noise(resnet.block_key(key, i), (6, 2)) for i in range(12)],
      1,
  )
  perturbed = np.asarray(aux['logits'] + noise)
  np.testing.assert_array_equal(
      aux['gates'], perturbed[..., 1] > perturbed[..., 0]
  )
  assert 0 < float(aux['gates'].mean()) < 1
  # The same key gives the same gates scanned; another key other gates, both ways.
  np.testing.assert_array_equal(run_scanned(key)[1]['gates'], aux['gates'])
  other_gates = run_unrolled(other)[1]['gates']
  assert np.any(np.asarray(other_gates) != np.asarray(aux['gates']))
  np.testing.assert_array_equal(run_scanned(other)[1]['gates'], other_gates)
