"""Tests of adanet_jax.model.norm: PyTorch's BatchNorm numerics with flax's variables,
and the choice of BatchNorm gamma init."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adanet_jax.errors import ConfigError
from adanet_jax.model import factory, norm
from adanet_jax.train import checkpoints


def _tree(variables):
  return jax.tree.map(lambda a: (a.shape, str(a.dtype)), variables)


@pytest.mark.parametrize('shape', [(6, 5), (4, 3, 3, 5)])
def test_variables_are_those_of_flax_batchnorm(shape):
  x = jnp.ones(shape)
  ours = jax.eval_shape(
      norm.BatchNorm(use_running_average=False).init, jax.random.key(0), x
  )
  flax = jax.eval_shape(
      nn.BatchNorm(use_running_average=False).init, jax.random.key(0), x
  )
  assert (
      _tree(ours)
      == _tree(flax)
      == {
          'params': {'scale': ((5,), 'float32'), 'bias': ((5,), 'float32')},
          'batch_stats': {'mean': ((5,), 'float32'), 'var': ((5,), 'float32')},
      }
  )


@pytest.mark.parametrize(
    'config_name,arg,size',
    [
        ('cifar10.py', 'depth=8', 8),
        ('wide_cifar10.py', 'depth=10,width=1', 8),
        ('imagenet.py', 'resnet50', 32),
    ],
)
def test_model_checkpoint_layout_unchanged(
    load_config, monkeypatch, config_name, arg, size
):
  # The layout of checkpoints written with flax's nn.BatchNorm everywhere.
  config = load_config(config_name, arg)
  shape = (1, size, size, 3)

  def layout():
    model = factory.create_model(config)
    return _tree(
        jax.eval_shape(
            lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False)
        )
    )

  ours = layout()
  monkeypatch.setattr(norm, 'BatchNorm', nn.BatchNorm)
  assert ours == layout()


def _numpy_bn(x, scale, bias, eps=1e-5):
  x = np.asarray(x, np.float64)
  axes = tuple(range(x.ndim - 1))
  mean, var = x.mean(axis=axes), x.var(axis=axes)
  return (x - mean) / np.sqrt(var + eps) * scale + bias, mean, var


@pytest.mark.parametrize('shape', [(32, 16), (4, 3, 3, 16)])
def test_training_statistics_as_pytorch(shape):
  # Features with a spread small next to their mean (as the gates' hidden
  # units): the one-pass variance of flax loses them, two passes do not.
  rng = np.random.RandomState(0)
  x = (30.0 + rng.uniform(-1, 1, 16) + 0.05 * rng.randn(*shape)).astype(
      np.float32
  )
  module = norm.BatchNorm(
      use_running_average=False, scale_init=nn.initializers.uniform(scale=1.0)
  )
  variables = module.init(jax.random.key(0), jnp.asarray(x))
  p = jax.tree.map(np.asarray, variables['params'])
  y, updates = module.apply(variables, jnp.asarray(x), mutable=['batch_stats'])
  want, mean, var = _numpy_bn(x, p['scale'], p['bias'])
  n = int(np.prod(shape[:-1]))
  # The float32 batch mean of values near 30 is off by ~1e-6, i.e. 2e-5
  # standard deviations; PyTorch's CPU kernel accumulates in float64.
  np.testing.assert_allclose(y, want, rtol=0, atol=2e-4)
  np.testing.assert_allclose(
      updates['batch_stats']['mean'], 0.1 * mean, rtol=1e-6
  )
  # PyTorch's running variance: the unbiased batch variance, n/(n-1).
  np.testing.assert_allclose(
      updates['batch_stats']['var'], 0.9 + 0.1 * var * n / (n - 1), rtol=1e-6
  )
  # From a running variance of 0 the update is 0.1 x the batch variance
  # used: two passes keep it to float32 rounding, flax's one pass does not.
  zero = {
      **variables,
      'batch_stats': {'mean': jnp.zeros(16), 'var': jnp.zeros(16)},
  }
  _, ours = module.apply(zero, jnp.asarray(x), mutable=['batch_stats'])
  _, flax = nn.BatchNorm(use_running_average=False, momentum=0.9).apply(
      zero, jnp.asarray(x), mutable=['batch_stats']
  )
  np.testing.assert_allclose(
      ours['batch_stats']['var'], 0.1 * var * n / (n - 1), rtol=2e-6
  )
  assert (
      np.abs(np.asarray(flax['batch_stats']['var']) / (0.1 * var) - 1).max()
      > 0.05
  )


def test_evaluation_uses_running_statistics():
  x = jnp.asarray(np.random.RandomState(1).randn(3, 4), jnp.float32)
  variables = {
      'params': {
          'scale': jnp.array([1.0, 2.0, 0.5, 1.5]),
          'bias': jnp.arange(4.0),
      },
      'batch_stats': {
          'mean': jnp.array([0.5, -1.0, 0.0, 2.0]),
          'var': jnp.array([1.0, 4.0, 0.25, 9.0]),
      },
  }
  y = norm.BatchNorm(use_running_average=True).apply(variables, x)
  bs = jax.tree.map(np.asarray, variables)
  want = (np.asarray(x) - bs['batch_stats']['mean']) / np.sqrt(
      bs['batch_stats']['var'] + 1e-5
  ) * bs['params']['scale'] + bs['params']['bias']
  np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


def test_bfloat16_keeps_float32_statistics():
  x = jnp.asarray(
      np.random.RandomState(2).randn(8, 2, 2, 3) + 5.0, jnp.bfloat16
  )
  module = norm.BatchNorm(use_running_average=False, dtype=jnp.bfloat16)
  variables = module.init(jax.random.key(0), x)
  y, updates = module.apply(variables, x, mutable=['batch_stats'])
  assert y.dtype == jnp.bfloat16
  assert updates['batch_stats']['mean'].dtype == jnp.float32
  x64 = np.asarray(x.astype(jnp.float32), np.float64)
  np.testing.assert_allclose(
      updates['batch_stats']['mean'], 0.1 * x64.mean(axis=(0, 1, 2)), rtol=1e-6
  )
  np.testing.assert_allclose(
      updates['batch_stats']['var'],
      0.9 + 0.1 * x64.var(axis=(0, 1, 2)) * 32 / 31,
      rtol=1e-5,
  )


def _bn_scales(config):
  """{path: scale} of every BatchNorm of a fresh model of the config's family.

  The initialisers come from `factory.create_model`; the network is cut to one
  block per stage at 8x8 so that initialising it is cheap.
  """
  model = factory.create_model(config)
  small = model.clone(
      stage_sizes=(1,) * len(model.stage_sizes),
      stage_widths=tuple(8 * 2**i for i in range(len(model.stage_sizes))),
  )
  variables = small.init(
      jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False
  )
  flat = jax.tree_util.tree_flatten_with_path(variables['params'])[0]
  return {
      '/'.join(k.key for k in path[:-1]): np.asarray(v)
      for path, v in flat
      if path[-1].key == 'scale'
  }


@pytest.mark.parametrize(
    'config_name,arg,uniform_where',
    [
        ('cifar10.py', 'depth=8', 'everywhere'),
        ('wide_cifar10.py', 'depth=10,width=1', 'gates'),
        ('imagenet.py', 'resnet50', 'gates'),
    ],
)
def test_reference_gamma_init_where_the_reference_has_it(
    load_config, config_name, arg, uniform_where
):
  config = load_config(config_name, arg)
  assert config.model.bn_gamma_init == 'reference'
  scales = _bn_scales(config)
  uniform = {
      p
      for p in scales
      if uniform_where == 'everywhere' or p.endswith('gate/fc1_bn')
  }
  assert (
      any(p.endswith('shortcut_bn') for p in scales)
      or config_name == 'wide_cifar10.py'
  )
  assert len([p for p in uniform if 'gate' in p]) == len(
      factory.stage_sizes(config.model)
  )
  for path, scale in scales.items():
    if path in uniform:
      assert 0 <= scale.min() and scale.max() < 1 and scale.std() > 0.15, path
    else:
      np.testing.assert_array_equal(scale, 1.0, err_msg=path)
  # 'ones': the same initialisers, ones for backbone and gates alike.
  assert (
      norm.gamma_inits('ones', config.model.name) == (nn.initializers.ones,) * 2
  )


def test_gamma_init_field(load_config):
  assert load_config('digits.py').model.bn_gamma_init == 'ones'
  assert load_config('cifar100.py').model.bn_gamma_init == 'reference'
  config = load_config('digits.py')
  config.model.bn_gamma_init = 'uniform'
  with pytest.raises(
      ConfigError,
      match=r"^model.bn_gamma_init='uniform' is unknown; allowed: "
      r'ones, reference$',
  ):
    factory.validate(config)
  # An init-only choice: workdirs written before the field existed still match.
  config.model.bn_gamma_init = 'reference'
  assert 'model.bn_gamma_init' not in checkpoints.model_signature(config)
