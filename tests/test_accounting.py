"""Tests of compute accounting: reference MAC counts, per-image counts given
gate decisions, and agreement with XLA's own cost analysis."""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from adanet_jax.model import accounting, factory


def _table(config, **kwargs):
  model = factory.create_model(config)
  s, c = config.data.image_size, config.data.channels
  return _cost_table(model, (s, s, c), **kwargs)


# Tracing a ResNet-110 or -50 takes seconds: tests of the same model share one table.
_cost_table = functools.cache(accounting.cost_table)


def test_cifar_resnet110_exact_macs(load_config):
  t = _table(load_config('cifar10.py'))
  # Stem 442,368 + 18 x 4,718,592 + 2 x 83,886,080 (stages 2 and 3) + head 640.
  assert t.baseline == 253_149_824
  assert sum(t.gate) == 33_216
  assert t.dense == 253_183_040
  assert (
      len(t.branch) == 54
      and t.branch[18] == 3_538_944
      and t.shortcut[18] == 131_072
  )


@pytest.mark.parametrize(
    'name,arg,want',
    [
        ('cifar10.py', None, 0.2532e9),
        ('imagenet.py', 'resnet50', 4.0894e9),
        ('imagenet.py', 'resnet101', 7.8019e9),
    ],
)
def test_dense_macs_match_reference_within_0_1_percent(
    load_config, name, arg, want
):
  config = load_config(name, arg)
  config.gates.fix_target_one = False  # the reference model: every gate runs
  assert abs(_table(config).dense / want - 1) < 1e-3


def test_resnet50_block_macs_match_reference(load_config):
  t = _table(load_config('imagenet.py', 'resnet50'))
  want = (
      [179.8, 218.4, 218.4, 269.7, 218.4, 218.4, 218.4, 269.7]
      + [218.4] * 5
      + [269.7, 218.4, 218.4]
  )
  np.testing.assert_allclose(np.array(t.branch) / 1e6, want, atol=0.06)
  assert t.baseline == 4_089_184_256  # torchvision ResNet-50's conv + fc count
  # Fixed blocks run without their gate MLP.
  assert [m > 0 for m in t.gate] == [
      i not in (0, 1, 3, 7, 13, 15) for i in range(16)
  ]


def test_per_image_and_paper_convention(load_config):
  t = _table(load_config('cifar10.py', 'depth=20'))
  gates = np.zeros((2, 9))
  gates[0] = 1
  gates[1, [0, 4]] = 1
  per_image = t.per_image(gates)
  assert per_image[0] == t.dense
  assert per_image[1] == t.always + t.branch[0] + t.branch[4]
  assert t.always == t.outside + sum(t.shortcut) + sum(t.gate)
  assert t.paper_convention(gates) == pytest.approx(t.baseline * 11 / 18)


def _xla_matmul_macs(fn, *args) -> float:
  """Sum of XLA's cost analysis (flops / 2) over every convolution and dot of
  `fn`'s forward pass, each lowered on its own with its real shapes (ops of
  equal shapes and parameters analysed once)."""
  total, seen = 0.0, {}

  def visit(jaxpr):
    nonlocal total
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ('conv_general_dilated', 'dot_general'):
        avals = [
            jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars
        ]
        key = (eqn.primitive.name, str(avals), str(sorted(eqn.params.items())))
        if key not in seen:
          op = jax.jit(lambda *xs, e=eqn: e.primitive.bind(*xs, **e.params))
          cost = op.lower(*avals).cost_analysis()
          seen[key] = (cost[0] if isinstance(cost, list) else cost)['flops'] / 2
        total += seen[key]
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(jax.make_jaxpr(fn)(*args).jaxpr)
  return total


@pytest.mark.parametrize(
    'name,arg', [('cifar10.py', 'depth=20'), ('imagenet.py', 'resnet50')]
)
def test_macs_agree_with_xla_cost_analysis(load_config, name, arg):
  config = load_config(name, arg)
  model = factory.create_model(config)
  s = config.data.image_size
  x = jnp.zeros((1, s, s, 3))
  # Shapes suffice (nothing runs): no eager initialisation.
  variables = jax.eval_shape(
      lambda: model.init({'params': jax.random.key(0)}, x, train=False)
  )

  def forward(v, x):
    return model.apply(v, x, train=False, gate_mode='deterministic')

  xla = _xla_matmul_macs(forward, variables, x)
  # XLA counts only the kernel taps that land on real pixels.
  ours = accounting.cost_table(model, (s, s, 3), count_padding=False).dense
  assert abs(xla / ours - 1) < 0.01, (xla, ours)
  # The whole compiled forward pass adds elementwise work (BatchNorm, ReLU,
  # additions) on top of the convolutions and dots, never less.
  whole = jax.jit(forward).lower(variables, x).compile().cost_analysis()
  whole = (whole[0] if isinstance(whole, list) else whole)['flops'] / 2
  assert ours <= whole <= 1.03 * ours
