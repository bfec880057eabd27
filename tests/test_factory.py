"""Tests of the model families: exact parameter counts, variants, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adanet_jax import config_lib
from adanet_jax.errors import ConfigError
from adanet_jax.model import factory, xla_cpu


def _params(config):
  model = factory.create_model(config)
  s, c = config.data.image_size, config.data.channels
  variables = jax.eval_shape(
      lambda: model.init(
          {'params': jax.random.key(0)}, jnp.zeros((1, s, s, c)), train=False
      )
  )
  leaves = jax.tree_util.tree_leaves_with_path(variables['params'])
  total = sum(x.size for _, x in leaves)
  gates = sum(
      x.size for path, x in leaves if 'gate' in jax.tree_util.keystr(path)
  )
  return total, gates


@pytest.mark.parametrize(
    'name,arg,want_total,want_gates',
    [
        ('cifar10.py', None, 1_766_630, 35_916),
        ('imagenet.py', 'resnet50', 25_768_264, 211_232),
        ('imagenet.py', 'resnet101', 45_040_314, 491_154),
        ('imagenet.py', 'resnet50,gated=false', 25_557_032, 0),
        ('imagenet.py', 'resnet101,gated=false', 44_549_160, 0),
    ],
)
def test_parameter_counts_match_reference(
    load_config, name, arg, want_total, want_gates
):
  assert _params(load_config(name, arg)) == (want_total, want_gates)


def test_block_counts_and_fixed_blocks(load_config):
  assert factory.num_blocks(load_config('cifar10.py').model) == 54
  assert factory.num_blocks(load_config('imagenet.py', 'resnet152').model) == 50
  r50 = load_config('imagenet.py', 'resnet50,t=0.4')
  assert factory.block_targets(r50) == (
      1,
      1,
      0.8,
      1,
      0.4,
      0.4,
      0.4,
      1,
      0.4,
      0.4,
      0.4,
      0.4,
      0.4,
      1,
      0.7,
      1,
  )
  assert factory.fixed_blocks(r50) == (0, 1, 3, 7, 13, 15)
  r50.gates.fix_target_one = (
      False  # reference behaviour: stochastic, out of the loss
  )
  assert factory.fixed_blocks(r50) == ()
  r101 = load_config('imagenet.py', 'resnet101,t=0.3')
  assert factory.block_targets(r101) == (1.0,) * 8 + (0.3,) * 25


def _apply(model, variables, x, gate_mode):
  """The inference forward pass as one compiled program (op by op, each op of
  a ResNet-20 is compiled on its own: seconds)."""
  return jax.jit(lambda v: model.apply(v, x, train=False, gate_mode=gate_mode))(
      variables
  )


def _shapes(model, x):
  """Shapes and dtypes of the variables and outputs, nothing computed."""

  def init_and_apply():
    variables = model.init({'params': jax.random.key(0)}, x, train=False)
    return variables, model.apply(variables, x, train=False)

  return jax.eval_shape(init_and_apply)


def test_fixed_blocks_always_execute_and_plain_model_has_no_gates(load_config):
  config = load_config('cifar10.py', 'depth=20')
  config.loss.targets = (1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 1)
  model = factory.create_model(config)
  x = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
  variables = model.init({'params': jax.random.key(1)}, x, train=False)
  p = variables['params']
  # Shut every gate: bias strongly towards "skip".
  for name in p:
    if 'gate' in p[name]:
      p[name]['gate']['fc2']['bias'] = jnp.array([5.0, -5.0])
  _, aux = _apply(model, variables, x, 'deterministic')
  np.testing.assert_array_equal(aux['gates'][:, [0, 1, 2, 8]], 1.0)
  np.testing.assert_array_equal(aux['gates'][:, 3:8], 0.0)
  np.testing.assert_array_equal(aux['probs'][:, [0, 1, 2, 8]], 1.0)

  plain = load_config('cifar10.py', 'depth=20,gated=false')
  model = factory.create_model(plain)
  variables = model.init({'params': jax.random.key(1)}, x, train=False)
  assert not any(
      'gate' in block
      for block in variables['params'].values()
      if isinstance(block, dict)
  )
  logits, aux = _apply(model, variables, x, 'sample')
  assert logits.shape == (8, 10)
  np.testing.assert_array_equal(aux['gates'], 1.0)
  assert factory.block_targets(plain) == (1.0,) * 9


def test_wide_resnet_shapes(load_config):
  config = load_config('cifar10.py', 'depth=20')
  config.model.name = 'wide_resnet'
  config.model.depth = 16
  config.model.width = 2
  model = factory.create_model(config)
  x = jnp.zeros((2, 32, 32, 3))
  variables, (logits, aux) = _shapes(model, x)
  assert logits.shape == (2, 10) and aux['gates'].shape == (2, 6)
  p = variables['params']
  assert p['stage1_block0']['conv1']['kernel'].shape == (3, 3, 16, 32)
  assert p['stage3_block1']['conv2']['kernel'].shape == (3, 3, 128, 128)
  assert (
      'shortcut_conv' in p['stage1_block0']
      and 'shortcut_conv' not in p['stage1_block1']
  )
  assert p['final_bn']['scale'].shape == (128,)


def test_bfloat16_compute_keeps_float32_parameters(load_config):
  config = load_config('cifar10.py', 'depth=20')
  config.model.dtype = 'bfloat16'
  model = factory.create_model(config)
  x = jnp.zeros((2, 32, 32, 3))
  variables, (logits, aux) = _shapes(model, x)
  assert {v.dtype for v in jax.tree.leaves(variables)} == {jnp.dtype('float32')}
  assert logits.dtype == jnp.float32 and aux['probs'].dtype == jnp.float32


@pytest.mark.parametrize(
    'field,value,message',
    [
        (
            'model.depth',
            100,
            r'model.depth=100 is not allowed for cifar_resnet: depth must be 6n\+2',
        ),
        (
            'model.name',
            'vgg',
            r"model.name='vgg' is unknown; allowed: cifar_resnet, wide_resnet, "
            r'imagenet_resnet',
        ),
        ('loss.target', 1.5, r'loss.target=1.5 is outside \(0, 1\]'),
        ('loss.target', 0.0, r'loss.target=0.0 is outside \(0, 1\]'),
        (
            'loss.targets',
            (0.5, 0.5),
            r'loss.targets has 2 entries but the model has 54 gated blocks',
        ),
        (
            'loss.reduction',
            'max',
            r"loss.reduction='max' is unknown; allowed: mean, sum",
        ),
        (
            'model.dtype',
            'float16',
            r"model.dtype='float16' is unknown; allowed: float32, bfloat16",
        ),
        (
            'model.scan_blocks',
            'yes',
            r"^model.scan_blocks='yes' is unknown; allowed: auto, on, off$",
        ),
        (
            'loss.target_schedule',
            'resnet50_reference',
            r"loss.target_schedule='resnet50_reference' defines 16 blocks but model "
            r'cifar_resnet-110 has 54',
        ),
    ],
)
def test_bad_model_config_is_refused_with_field_name(
    load_config, field, value, message
):
  config = load_config('cifar10.py')
  section, key = field.split('.')
  config[section][key] = value
  with pytest.raises(ConfigError, match=message):
    factory.validate(config)


def test_bad_imagenet_depth_is_refused(load_config):
  config = load_config('imagenet.py')
  config.model.depth = 34
  with pytest.raises(
      ConfigError,
      match=r'model.depth=34 is not allowed for imagenet_resnet: '
      r'allowed depths are \[50, 101, 152\]',
  ):
    factory.validate(config)
  with pytest.raises(
      ValueError, match=r"arch='resnet18' is unknown; allowed: resnet50, "
  ):
    load_config('imagenet.py', 'resnet18')


@pytest.mark.parametrize(
    'scan_blocks,backend,dtype,want',
    [
        # 'auto' scans only float32 on XLA:CPU, with its workarounds (the
        # scanned bfloat16 CPU step is slower); elsewhere unrolled.
        ('auto', 'cpu', 'float32', (6, xla_cpu.loop_conv, None)),
        ('auto', 'cpu', 'bfloat16', (0, None, None)),
        (
            'on',
            'cpu',
            'bfloat16',
            (6, xla_cpu.loop_conv, xla_cpu.sixteen_bit_residuals),
        ),
        ('auto', 'gpu', 'float32', (0, None, None)),
        ('auto', 'tpu', 'bfloat16', (0, None, None)),
        # 'on' scans anywhere, the CPU workarounds on the CPU only; 'off' never.
        ('on', 'gpu', 'bfloat16', (6, None, None)),
        ('on', 'cpu', 'float32', (6, xla_cpu.loop_conv, None)),
        ('off', 'cpu', 'bfloat16', (0, None, None)),
        ('off', 'gpu', 'float32', (0, None, None)),
    ],
)
def test_scan_blocks_resolves_per_backend(
    load_config, scan_blocks, backend, dtype, want
):
  config = load_config('cifar10.py')
  config.model.scan_blocks, config.model.dtype = scan_blocks, dtype
  model = factory.create_model(config, backend=backend)
  assert (
      model.scan_min_run,
      model.loop_conv_fn,
      model.scan_body_wrapper,
  ) == want


def test_scan_blocks_defaults_to_auto_and_on_this_backend(load_config):
  config = load_config('cifar10.py')
  assert config.model.scan_blocks == 'auto'
  # Tests run on XLA:CPU (conftest): the default backend scans there.
  assert factory.create_model(config).scan_min_run == factory.SCAN_MIN_RUN == 6
  # A config stored before the field existed loads as 'auto'.
  stored = config.to_dict()
  del stored['model']['scan_blocks']
  assert config_lib.from_dict(stored).model.scan_blocks == 'auto'
