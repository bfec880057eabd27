"""Tests of `adanet_jax.train.steps`: the train step's metric sums and the eval
step's masked sums; the train step (the optimizer held by the state, the
loss numbers runtime values) equals a step written out with optax and every
number fixed from the config, and one compiled step serves every value of the
loss targets, loss weight and gate temperature."""

import functools

from conftest import tiny_config
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adanet_jax.data import input_pipeline
from adanet_jax.model import factory
from adanet_jax.train import losses, optim, steps
from adanet_jax.train import plan as plan_lib

STEPS_PER_EPOCH = (
    2  # short epochs, so that 4 steps cross warmup and decay boundaries
)


def _fixed_schedule(config, steps_per_epoch):
  """The schedule built by optax from the config's numbers, written out here."""
  o = config.optim
  peak = o.base_learning_rate * config.train.batch_size / o.base_batch_size
  warmup = round(o.warmup_epochs * steps_per_epoch)
  total = round(config.train.num_epochs * steps_per_epoch)
  drops = [round(f * total) for f in o.decay_fractions]
  main = {
      'step': lambda: optax.piecewise_constant_schedule(
          peak, {s - warmup: o.decay_factor for s in drops}
      ),
      'cosine': lambda: optax.cosine_decay_schedule(
          peak, max(total - warmup, 1)
      ),
      'constant': lambda: optax.constant_schedule(peak),
  }[o.schedule]()
  if not warmup:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), main], [warmup]
  )


def _fixed_train_step(state, batch, key, *, config, schedule):
  """The train step with every number a trace-time constant."""
  tx = optax.chain(
      optax.add_decayed_weights(config.optim.weight_decay),
      optax.sgd(
          schedule,
          momentum=config.optim.momentum or None,
          nesterov=config.optim.nesterov,
      ),
  )

  def loss_fn(params):
    (logits, aux), updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats},
        batch['image'],
        train=True,
        gate_mode=config.gates.train_mode,
        key=steps.step_key(key, state.step, steps.GUMBEL_STREAM),
        mutable=['batch_stats'],
    )
    loss, _ = losses.total_loss(
        logits,
        batch['label'],
        aux,
        factory.block_targets(config),
        config.loss.weight,
        config.loss.reduction,
    )
    return loss, updates

  (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
  )
  state = state.replace(tx=tx).apply_gradients(
      grads=grads, batch_stats=updates['batch_stats']
  )
  return state.replace(tx=None), loss


def _config(load_config, schedule, **optim_fields):
  config = load_config('digits.py', 'depth=8,epochs=3')
  config.train.batch_size = 32
  config.gates.temperature = (
      0.5  # not the module default: the runtime value must be used
  )
  config.optim.schedule = schedule
  for field, value in optim_fields.items():
    config.optim[field] = value
  return config


@pytest.mark.timeout(200)
@pytest.mark.parametrize(
    'schedule,optim_fields',
    [
        ('cosine', dict(warmup_epochs=1.0)),
        (
            'step',
            dict(
                decay_fractions=(1 / 3, 0.5), warmup_epochs=0.0, nesterov=True
            ),
        ),
    ],
)
def test_train_step_equals_step_written_out(
    load_config, schedule, optim_fields
):
  config = _config(load_config, schedule, **optim_fields)
  dataset = input_pipeline.create_dataset(config)
  model = factory.create_model(config)
  key = jax.random.key(config.seed)
  plan = plan_lib.make_plan(config, STEPS_PER_EPOCH)
  tx, schedule_fn = optim.create_optimizer(plan.optimizer)
  new_step = jax.jit(steps.make_train_step(plan, schedule_fn))
  old_step = jax.jit(
      functools.partial(
          _fixed_train_step,
          config=config,
          schedule=_fixed_schedule(config, STEPS_PER_EPOCH),
      )
  )
  new = steps.create_train_state(model, tx, plan.image_shape, jax.random.key(0))
  hparams = steps.make_hparams(plan)
  old = new.replace(tx=None)
  fixed = _fixed_schedule(config, STEPS_PER_EPOCH)
  for step in range(4):
    batch = dataset.train_batch(step)
    new, metrics = new_step(new, batch, key, hparams)
    old, old_loss = old_step(old, batch, key)
    np.testing.assert_allclose(
        metrics['loss'] / metrics['count'], old_loss, rtol=1e-6
    )
    # The metric reads the optimizer's own schedule.
    assert float(metrics['learning_rate'] / metrics['count']) == float(
        fixed(step)
    )
  assert int(new.step) == int(old.step) == 4
  for a, b in zip(
      jax.tree.leaves((new.params, new.batch_stats, new.opt_state)),
      jax.tree.leaves((old.params, old.batch_stats, old.opt_state)),
  ):
    np.testing.assert_allclose(
        np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7
    )
  # The optimizer state keeps its layout: checkpoints written before load.
  assert jax.tree.structure(new.opt_state) == jax.tree.structure(old.opt_state)


@pytest.mark.parametrize(
    'schedule,optim_fields',
    [
        ('cosine', dict(warmup_epochs=1.0)),
        ('step', dict(decay_fractions=(0.5, 250 / 300), warmup_epochs=0.0)),
        ('step', dict(decay_fractions=(2 / 300, 0.01), warmup_epochs=1.0)),
        ('constant', dict(warmup_epochs=0.5)),
    ],
)
def test_schedule_equals_optax_schedule_exactly(
    load_config, schedule, optim_fields
):
  config = _config(load_config, schedule, **optim_fields)
  config.train.num_epochs = 300.0
  counts = jnp.arange(0, 700, dtype=jnp.int32)
  ours = jax.jit(
      jax.vmap(optim.create_schedule(plan_lib.make_plan(config, 2).optimizer))
  )(counts)
  fixed = jax.jit(jax.vmap(_fixed_schedule(config, 2)))(counts)
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(fixed, np.float32))


@pytest.mark.timeout(200)
def test_other_loss_numbers_reuse_the_compiled_step(load_config):
  config = _config(load_config, 'cosine', warmup_epochs=1.0)
  dataset = input_pipeline.create_dataset(config)
  plan = plan_lib.make_plan(config, STEPS_PER_EPOCH)
  tx, schedule = optim.create_optimizer(plan.optimizer)
  state = steps.create_train_state(
      factory.create_model(config), tx, plan.image_shape, jax.random.key(0)
  )
  batch, key = dataset.train_batch(0), jax.random.key(0)
  assert sorted(steps.make_hparams(plan)) == [
      'loss_weight',
      'targets',
      'temperature',
  ]
  compiled = (
      jax.jit(steps.make_train_step(plan, schedule))
      .lower(state, batch, key, steps.make_hparams(plan))
      .compile()
  )
  other = config.copy_and_resolve_references()
  other.loss.target, other.loss.weight, other.gates.temperature = 0.3, 5.0, 2.0
  other_plan = plan_lib.make_plan(other, STEPS_PER_EPOCH)
  # The same executable takes the other run's numbers, and they matter.
  _, m1 = compiled(state, batch, key, steps.make_hparams(plan))
  _, m2 = compiled(state, batch, key, steps.make_hparams(other_plan))
  # warmup starts at 0
  assert float(m1['learning_rate']) == float(m2['learning_rate']) == 0.0
  np.testing.assert_allclose(
      float(m1['target_loss']) / 32,
      np.mean((np.asarray(m1['gates']) / 32 - 0.6) ** 2),
      rtol=1e-5,
  )
  np.testing.assert_allclose(
      float(m2['target_loss']) / 32,
      np.mean((np.asarray(m2['gates']) / 32 - 0.3) ** 2),
      rtol=1e-5,
  )
  np.testing.assert_allclose(
      float(m2['loss']), float(m2['ce'] + 5.0 * m2['target_loss']), rtol=1e-6
  )


def test_call_time_temperature_replaces_the_attribute(load_config):
  config = load_config('digits.py', 'depth=8')
  images = jax.random.normal(jax.random.key(1), (16, 8, 8, 1))

  def gate_grads(temperature_attr, temperature_call):
    config.gates.temperature = temperature_attr
    model = factory.create_model(config)
    variables = model.init({'params': jax.random.key(0)}, images, train=False)

    def gate_sum(params):
      (_, aux), _ = model.apply(
          {**variables, 'params': params},
          images,
          train=True,
          gate_mode='sample',
          temperature=temperature_call,
          key=jax.random.key(2),
          mutable=['batch_stats'],
      )
      return aux['gates'].sum()

    return jax.tree.leaves(jax.grad(gate_sum)(variables['params']))

  attr = gate_grads(2.0, None)
  call = gate_grads(1.0, jnp.float32(2.0))
  default = gate_grads(1.0, None)
  for a, c in zip(attr, call):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
  assert any(not np.array_equal(a, d) for a, d in zip(attr, default))


def _state(config):
  plan = plan_lib.make_plan(config, steps_per_epoch=44)
  tx, schedule = optim.create_optimizer(plan.optimizer)
  state = steps.create_train_state(
      factory.create_model(config), tx, plan.image_shape, jax.random.key(0)
  )
  return state, plan, schedule


def _batch(n=6, seed=0):
  rng = np.random.default_rng(seed)
  return {
      'image': rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
      'label': rng.integers(0, 10, n).astype(np.int32),
  }


def test_eval_step_counts_only_real_examples_and_branches_run():
  config = tiny_config()
  state, _, _ = _state(config)
  batch = {**_batch(), 'mask': np.array([1, 1, 1, 1, 0, 0], np.float32)}
  for mode in ('deterministic', 'expected'):
    out = jax.jit(
        lambda s, b, mode=mode: steps.eval_step(
            s, b, jax.random.key(0), 0, gate_mode=mode, num_classes=10
        )
    )(state, batch)
    assert float(out['count']) == 4.0
    assert float(out['class_count'].sum()) == 4.0
    if mode == 'expected':  # every branch computed; gates are probabilities
      np.testing.assert_array_equal(out['executed'], [4.0, 4.0, 4.0])
      assert np.all((out['gates'] > 0) & (out['gates'] < 4))
    else:
      np.testing.assert_array_equal(out['executed'], out['gates'])


def test_train_step_sums_and_step_key():
  config = tiny_config()
  state, plan, schedule = _state(config)
  step = jax.jit(steps.make_train_step(plan, schedule))
  new, out = step(state, _batch(), jax.random.key(1), steps.make_hparams(plan))
  assert int(new.step) == 1 and float(out['count']) == 6.0
  assert float(out['first_nonfinite_step']) == np.inf
  np.testing.assert_allclose(
      float(out['loss']),
      float(out['ce'] + config.loss.weight * out['target_loss']),
      rtol=1e-6,
  )
  # The noise of one stream at one step is a function of (seed, step) alone.
  key = jax.random.key(1)
  assert jnp.array_equal(
      jax.random.key_data(steps.step_key(key, 3, 0)),
      jax.random.key_data(jax.random.fold_in(jax.random.fold_in(key, 3), 0)),
  )
