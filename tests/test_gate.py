"""Tests of the gate: initial opening rate, modes and keys, straight-through gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adanet_jax.errors import ConfigError
from adanet_jax.model import blocks, factory
from adanet_jax.model.gate import Gate, check_gate_mode, gumbel_noise, straight_through_gate

SIGMOID_1_9 = 1 / (1 + np.exp(-1.9))


def _resnet20(load_config):
  config = load_config('cifar10.py', 'depth=20')
  return factory.create_model(config)


def test_fresh_gate_probability_is_sigmoid_1_9(load_config):
  model = _resnet20(load_config)
  x = jax.random.normal(jax.random.key(0), (16, 32, 32, 3))
  variables = model.init({'params': jax.random.key(1)}, x, train=False)
  _, aux = model.apply(variables, x, train=False, gate_mode='deterministic')
  # fc2 kernel ~ N(0, 1e-3): probabilities stay within 1e-3 of sigmoid(1.9).
  np.testing.assert_allclose(aux['probs'], SIGMOID_1_9, atol=2e-3)


def test_sample_mode_executes_87_percent(load_config):
  model = _resnet20(load_config)
  x = jax.random.normal(jax.random.key(0), (256, 32, 32, 3))
  variables = model.init({'params': jax.random.key(1)}, x, train=False)
  (_, aux), _ = model.apply(
      variables,
      x,
      train=True,
      gate_mode='sample',
      key=jax.random.key(2),
      mutable=['batch_stats'],
  )
  gates = np.asarray(aux['gates'])
  assert set(np.unique(gates)) <= {0.0, 1.0}
  assert abs(gates.mean() - 0.87) <= 0.03


def test_modes_and_keys(load_config):
  model = _resnet20(load_config)
  x = jax.random.normal(jax.random.key(0), (32, 32, 32, 3))
  variables = model.init({'params': jax.random.key(1)}, x, train=False)

  def run(mode, key):
    return model.apply(variables, x, train=False, gate_mode=mode, key=key)

  det_a, det_b = run('deterministic', jax.random.key(3)), run(
      'deterministic', jax.random.key(4)
  )
  np.testing.assert_array_equal(det_a[0], det_b[0])
  # all probabilities are 0.87
  np.testing.assert_array_equal(det_a[1]['gates'], 1.0)
  s1, s1_again, s2 = (run('sample', jax.random.key(k)) for k in (5, 5, 6))
  np.testing.assert_array_equal(s1[0], s1_again[0])
  np.testing.assert_array_equal(s1[1]['gates'], s1_again[1]['gates'])
  assert np.any(np.asarray(s1[1]['gates']) != np.asarray(s2[1]['gates']))
  assert np.any(np.asarray(s1[0]) != np.asarray(s2[0]))
  with pytest.raises(
      ConfigError,
      match="^gate mode 'sample' needs a key: pass key= to the " "model's call",
  ):
    # no key: no noise
    model.apply(variables, x, train=False, gate_mode='sample')


def test_sample_mode_decides_on_the_noise_of_its_key():
  gate = Gate()
  x = jax.random.normal(jax.random.key(0), (64, 4, 4, 8))
  variables = gate.init(
      {'params': jax.random.key(1)}, x, train=False, mode='deterministic'
  )
  # A random last layer: logits near zero, so the noise decides often.
  params = {
      **variables['params'],
      'fc2': {
          'kernel': jax.random.normal(jax.random.key(2), (16, 2)) * 0.1,
          'bias': jnp.zeros(2),
      },
  }
  key = jax.random.key(3)
  z, _, logits = gate.apply(
      {**variables, 'params': params}, x, train=False, mode='sample', key=key
  )
  perturbed = np.asarray(logits + gumbel_noise(key, (64, 2)))
  np.testing.assert_array_equal(z, perturbed[:, 1] > perturbed[:, 0])
  deterministic = np.asarray(logits[:, 1] > logits[:, 0])
  assert np.any(np.asarray(z) != deterministic) and 0 < float(z.mean()) < 1
  with pytest.raises(ConfigError, match="^gate mode 'sample' needs a key"):
    gate.apply({**variables, 'params': params}, x, train=False, mode='sample')


def _bn_eval(x, p, eps=1e-5):
  # A fresh BatchNorm in inference: running mean 0, variance 1.
  return x / np.sqrt(1 + eps) * p['scale'] + p['bias']


def _conv(x, kernel):
  return jax.lax.conv_general_dilated(
      x,
      kernel,
      (1, 1),
      ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )


def test_expected_mode_scales_branch_by_probability():
  block = blocks.BasicBlock(features=4, strides=1)
  x = jax.random.normal(jax.random.key(0), (3, 6, 6, 4))
  variables = block.init(
      {'params': jax.random.key(1)}, x, train=False, gate_mode='deterministic'
  )
  p = jax.tree.map(np.asarray, variables['params'])
  # Non-trivial gate: random last layer so probabilities differ per image.
  p['gate']['fc2']['kernel'] = np.asarray(
      jax.random.normal(jax.random.key(2), (16, 2))
  )
  out, (z, prob, _) = block.apply(
      {'params': p, 'batch_stats': variables['batch_stats']},
      x,
      train=False,
      gate_mode='expected',
  )
  g = p['gate']
  h = np.asarray(x).mean(axis=(1, 2)) @ g['fc1']['kernel'] + g['fc1']['bias']
  h = np.maximum(_bn_eval(h, g['fc1_bn']), 0)
  logits = h @ g['fc2']['kernel'] + g['fc2']['bias']
  want_prob = 1 / (1 + np.exp(-(logits[:, 1] - logits[:, 0])))
  branch = np.maximum(_bn_eval(_conv(x, p['conv1']['kernel']), p['bn1']), 0)
  branch = _bn_eval(_conv(branch, p['conv2']['kernel']), p['bn2'])
  want = np.maximum(np.asarray(x) + want_prob[:, None, None, None] * branch, 0)
  np.testing.assert_allclose(prob, want_prob, rtol=1e-5)
  np.testing.assert_allclose(z, want_prob, rtol=1e-5)
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
  assert len(set(np.round(want_prob, 3))) == 3  # the three images differ


def test_straight_through_value_and_gradient():
  logits = jnp.array([[0.3, -0.2], [1.0, 0.5], [-0.4, 0.9]])
  noise = jnp.array([[0.1, 0.7], [-0.3, 0.2], [0.5, -1.2]])
  c = jnp.array([1.5, -2.0, 0.7])
  tau = 2.0
  z = straight_through_gate(logits, noise, tau)
  perturbed = np.asarray(logits + noise)
  np.testing.assert_array_equal(
      z, (perturbed[:, 1] > perturbed[:, 0]).astype(np.float32)
  )
  grad = jax.grad(lambda l: jnp.sum(c * straight_through_gate(l, noise, tau)))(
      logits
  )
  s = np.exp(perturbed / tau) / np.exp(perturbed / tau).sum(-1, keepdims=True)
  want = (
      np.stack([-s[:, 0] * s[:, 1], s[:, 1] * (1 - s[:, 1])], axis=-1)
      / tau
      * c[:, None]
  )
  np.testing.assert_allclose(grad, want, rtol=1e-5)


def test_gradient_reaches_last_dense_as_softmax_gradient():
  gate = Gate()
  x = jax.random.normal(jax.random.key(0), (5, 4, 4, 8))
  variables = gate.init(
      {'params': jax.random.key(1)}, x, train=False, mode='deterministic'
  )
  c = jnp.array([1.0, -0.5, 2.0, 0.3, -1.2])

  def loss(params):
    z, *_ = gate.apply(
        {'params': params, 'batch_stats': variables['batch_stats']},
        x,
        train=False,
        mode='deterministic',
    )
    return jnp.sum(c * z), z

  grads, z = jax.grad(loss, has_aux=True)(variables['params'])
  assert set(np.unique(np.asarray(z))) <= {0.0, 1.0}
  p = jax.tree.map(np.asarray, variables['params'])
  h = np.asarray(x).mean(axis=(1, 2)) @ p['fc1']['kernel'] + p['fc1']['bias']
  h = np.maximum(_bn_eval(h, p['fc1_bn']), 0)
  logits = h @ p['fc2']['kernel'] + p['fc2']['bias']
  s = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  dlogits = (
      np.stack([-s[:, 0] * s[:, 1], s[:, 1] * (1 - s[:, 1])], -1)
      * np.asarray(c)[:, None]
  )
  assert np.abs(grads['fc2']['kernel']).max() > 1e-3
  np.testing.assert_allclose(
      grads['fc2']['kernel'], h.T @ dlogits, rtol=1e-4, atol=1e-7
  )
  np.testing.assert_allclose(grads['fc2']['bias'], dlogits.sum(0), rtol=1e-4)


def test_unknown_gate_mode_is_refused(load_config):
  with pytest.raises(
      ValueError,
      match="gate mode 'random' is unknown; allowed: sample, "
      'deterministic, expected',
  ):
    check_gate_mode('random')
  config = load_config('cifar10.py', 'depth=20')
  config.gates.train_mode = 'hard'
  with pytest.raises(
      ValueError, match='gates.train_mode: gate mode .hard. is unknown'
  ):
    factory.validate(config)
  config = load_config('cifar10.py', 'depth=20')
  config.gates.eval_modes = ('deterministic', 'soft')
  with pytest.raises(
      ValueError, match='gates.eval_modes: gate mode .soft. is unknown'
  ):
    factory.validate(config)
