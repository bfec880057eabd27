"""Tests of the skipping inference path: the same logits and gate decisions as
the masked model on the CIFAR, ImageNet and wide ResNets, at several batch
sizes and gate patterns (blocks all open, all closed, and mixed batches
filling their chunks exactly and partly), and the structure that makes it
skip."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adanet_jax.errors import ConfigError
from adanet_jax.infer import skip_inference
from adanet_jax.model import blocks, factory


def _images(batch, size, seed=0):
  # Per-image channel offsets make the images' pooled features, and so the
  # gates' logits, differ from image to image.
  noise, offset = jax.random.split(jax.random.key(seed))
  return jax.random.normal(
      noise, (batch, size, size, 3)
  ) + 2 * jax.random.normal(offset, (batch, 1, 1, 3))


def _random_variables(model, size, seed=0):
  """Random parameters and BatchNorm statistics at about the init's scale.

  Drawn with numpy: `model.init` of a ResNet-50 takes about a minute on two
  cores. Random running statistics make inference BatchNorm non-trivial, and
  gate kernels of std 3 make the gates' decisions depend on the image.
  """
  shapes = jax.eval_shape(
      lambda: model.init(
          {'params': jax.random.key(0)},
          jnp.zeros((1, size, size, 3)),
          train=False,
      )
  )
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    names = [getattr(p, 'key', '') for p in path]
    if names[-1] == 'kernel':
      std = (
          3.0 if names[-2] == 'fc2' else (1 / math.prod(leaf.shape[:-1])) ** 0.5
      )
      value = rng.normal(0, std, leaf.shape)
    elif names[-1] in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, leaf.shape)
    else:  # biases and running means
      value = rng.normal(0, 0.1, leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


_masked = jax.jit(
    lambda model, variables, x: model.apply(
        variables, x, train=False, gate_mode='deterministic'
    ),
    static_argnums=0,
)


def _check_matches_masked(model, variables, x, open_counts):
  """Sets the gates to `open_counts`, then compares skipping with masking."""
  variables = skip_inference.set_open_counts(model, variables, x, open_counts)
  want_logits, want = _masked(model, variables, x)
  fixed = list(model.fixed_blocks)
  want_counts = np.array(open_counts)
  want_counts[fixed] = x.shape[0]
  np.testing.assert_array_equal(want['gates'].sum(0), want_counts)
  logits, aux = skip_inference.skip_apply(model, variables, x)
  np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(aux['gates'], want['gates'])
  np.testing.assert_allclose(aux['probs'], want['probs'], rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(want_logits).max()) > 0.1  # not a vacuous comparison


# Blocks 3 and 6 of ResNet-20 have projection shortcuts. Batch 9 runs open
# samples in chunks of 2 rows: the counts fill chunks exactly and partly.
@pytest.mark.parametrize(
    'batch,open_counts',
    [
        (1, [1, 0, 1, 0, 0, 1, 0, 1, 1]),
        (9, [9, 0, 1, 3, 4, 5, 7, 8, 2]),
    ],
)
def test_cifar_resnet_matches_masked(load_config, batch, open_counts):
  model = factory.create_model(load_config('cifar10.py', 'depth=20'))
  variables = _random_variables(model, 32)
  _check_matches_masked(model, variables, _images(batch, 32), open_counts)


def test_scanned_runs_skip_like_masked(load_config):
  # Blocks 1-3 of each stage of ResNet-26 run under one lax.scan (as the long
  # runs of ResNet-110 do by default on XLA:CPU); their skipping runs in the loop body.
  model = factory.create_model(load_config('cifar10.py', 'depth=26')).clone(
      scan_min_run=2
  )
  variables = _random_variables(model, 16)
  _check_matches_masked(
      model, variables, _images(9, 16), [9, 0, 1, 3, 4, 5, 7, 8, 2, 0, 6, 9]
  )


# ResNet-50 with the reference targets: blocks 0, 1, 3, 7, 13, 15 are fixed
# (their counts are ignored); block 3 onwards start stages with projections.
@pytest.mark.parametrize(
    'batch,open_counts',
    [
        (1, [0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1, 0]),
        (3, [0, 0, 3, 0, 0, 1, 2, 0, 3, 2, 1, 0, 2, 0, 1, 0]),
    ],
)
def test_imagenet_resnet50_matches_masked(load_config, batch, open_counts):
  model = factory.create_model(load_config('imagenet.py', 'resnet50'))
  assert model.fixed_blocks == (0, 1, 3, 7, 13, 15)
  variables = _random_variables(model, 64)
  _check_matches_masked(model, variables, _images(batch, 64), open_counts)


def test_wide_resnet_matches_masked(load_config):
  # Pre-activation blocks: a closed block outputs shortcut(x), no ReLU; the
  # projection of blocks 1 and 2 reads relu(bn1(x)).
  config = load_config('cifar10.py')
  config.model.name, config.model.depth, config.model.width = (
      'wide_resnet',
      10,
      2,
  )
  model = factory.create_model(config)
  variables = _random_variables(model, 32)
  _check_matches_masked(model, variables, _images(5, 32), [3, 0, 2])
  _check_matches_masked(model, variables, _images(5, 32), [0, 5, 4])


def test_ungated_model_runs_every_block(load_config):
  model = factory.create_model(load_config('cifar10.py', 'depth=8,gated=false'))
  variables = _random_variables(model, 32)
  x = _images(3, 32)
  want_logits, want = _masked(model, variables, x)
  logits, aux = skip_inference.skip_apply(model, variables, x)
  np.testing.assert_array_equal(logits, want_logits)
  np.testing.assert_array_equal(aux['gates'], np.ones((3, 3)))


@pytest.mark.parametrize('mode', ['expected', 'sample'])
def test_rejects_soft_and_random_gate_modes(load_config, mode):
  model = factory.create_model(load_config('cifar10.py', 'depth=8'))
  variables = _random_variables(model, 32)
  with pytest.raises(ConfigError, match="needs gate_mode='deterministic'"):
    skip_inference.skip_apply(model, variables, _images(1, 32), gate_mode=mode)
  with pytest.raises(ConfigError, match='unknown'):
    skip_inference.check_skip_mode('hard')


@pytest.mark.parametrize(
    'batch,chunks,want_shapes',
    [
        (1, 8, [1]),  # batch 1: a conditional, the branch on the one image
        (
            9,
            4,
            [3, 9],
        ),  # chunks of 3 rows (the mix) and the whole batch (all open)
        (9, 1, [9, 9]),  # one chunk: the mix runs the whole (gathered) batch
        (8, 8, [1, 8]),  # chunks of one row
    ],
)
def test_run_where_open_every_count(batch, chunks, want_shapes):
  traced, runs = [], []

  def run_open(x):
    traced.append(x.shape[0])
    # one per chunk or batch actually run
    jax.debug.callback(lambda: runs.append(1))
    return 2 * x + 1

  combine = jax.jit(
      lambda is_open, x: skip_inference.run_where_open(
          is_open, x, run_open, lambda x: -x, chunks
      )
  )
  x = jnp.arange(batch * 2, dtype=jnp.float32).reshape(batch, 2) + 1
  rng = np.random.default_rng(0)
  size = -(-batch // chunks)
  for count in range(batch + 1):
    is_open = np.zeros(batch, bool)
    is_open[rng.permutation(batch)[:count]] = True
    want = np.where(is_open[:, None], 2 * x + 1, -x)
    runs.clear()
    np.testing.assert_array_equal(combine(jnp.asarray(is_open), x), want)
    jax.effects_barrier()
    # Nothing runs when no row is open, one whole-batch run when all are,
    # else as many chunks as the open rows fill.
    assert len(runs) == (
        0 if count == 0 else 1 if count == batch else -(-count // size)
    )
  assert traced == want_shapes
  with pytest.raises(ValueError, match='chunks must be at least 1'):
    skip_inference.run_where_open(
        jnp.ones(2, bool), x, run_open, lambda x: -x, 0
    )


@pytest.mark.parametrize(
    'block_class,features,strides,want_convs',
    [
        (blocks.BasicBlock, 16, 1, 0),
        (blocks.BasicBlock, 32, 2, 1),
        (blocks.Bottleneck, 4, 1, 0),
        (blocks.Bottleneck, 16, 2, 1),
        (blocks.PreActBlock, 16, 1, 0),
        (blocks.PreActBlock, 32, 2, 1),
    ],
)
def test_closed_block_computes_only_gate_and_shortcut(
    block_class, features, strides, want_convs
):
  # What makes skipping save compute: the branch of a closed block is dead
  # code that XLA removes; only a projection shortcut's conv remains.
  block = skip_inference._closed_class(block_class)(  # pylint: disable=protected-access
      features=features, strides=strides
  )
  x = jnp.ones((2, 8, 8, 16))
  variables = block.init(
      jax.random.key(0), x, train=False, gate_mode='deterministic'
  )
  apply = jax.jit(
      lambda v, x: block.apply(v, x, train=False, gate_mode='deterministic')
  )
  assert (
      apply.lower(variables, x).compile().as_text().count('convolution(')
      == want_convs
  )


@pytest.mark.parametrize('batch,want_loops', [(1, 0), (4, 3)])
def test_one_conditional_per_gated_block(load_config, batch, want_loops):
  # And, past batch 1, one loop over the chunks of open samples: each block's
  # branch is compiled twice at most (whole batch and chunk), whatever the count.
  model = factory.create_model(load_config('cifar10.py', 'depth=8'))
  variables = _random_variables(model, 32)
  hlo = skip_inference.skip_apply.lower(
      model, variables, _images(batch, 32)
  ).as_text()
  assert hlo.count('stablehlo.case') == 3
  assert hlo.count('stablehlo.while') == want_loops
