"""End-to-end trainer tests on the digits dataset: device-count invariance,
exact resume, evaluation coverage, bad input, non-finite losses, a
workdir deleted under the run, what a launch says of its start and a
finished workdir's rerun, and the ETA's arithmetic."""

import io
import json
import logging
import os
import shutil
import types

from conftest import (
    REPO,
    Interrupted,
    StopAt,
    fill,
    final_metrics,
    make_immutable,
    restore_state,
    snapshot,
    tiny_config,
)
import jax
import numpy as np
from PIL import Image
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from adanet_jax import config_lib
from adanet_jax.data import input_pipeline
from adanet_jax.errors import ConfigError, WorkdirGoneError, WorkdirWriteError
from adanet_jax.train import plan as plan_lib
from adanet_jax.train import progress, rundir, trainer


def _params_close(a, b, atol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def _run_steps(config, devices, num_steps):
  """`num_steps` train steps on the first `devices` devices; returns (state, metrics)."""
  dataset = input_pipeline.create_dataset(config)
  setup = trainer.setup(config, dataset, devices=jax.devices()[:devices])
  state = setup.init_state()
  all_metrics = []
  for step in range(num_steps):
    state, m = setup.train_step(
        state, setup.placement.to_global(dataset.train_batch(step))
    )
    all_metrics.append(jax.device_get(m))  # blocks on every step
  return jax.device_get(state), all_metrics


@pytest.mark.timeout(300)
def test_one_device_equals_eight_devices(load_config):
  assert jax.device_count() == 8
  config = tiny_config()
  one, m1 = _run_steps(config, 1, 2)
  eight, m8 = _run_steps(config, 8, 2)
  _params_close(one.params, eight.params, 1e-5)
  _params_close(one.batch_stats, eight.batch_stats, 1e-5)
  _params_close(m1, m8, 1e-5)
  assert m1[1]['gates'].sum() not in (0, 32 * 3)  # the gates really sampled


@pytest.mark.timeout(300)
def test_resume_equals_uninterrupted_run(load_config, tmp_path, caplog):
  caplog.set_level(logging.INFO, logger=trainer.__name__)
  config = tiny_config(train__num_epochs=4 * 32 / 1437)  # 4 steps
  dataset = input_pipeline.create_dataset(config)
  trainer.train_and_evaluate(config, str(tmp_path / 'straight'), dataset)
  with pytest.raises(Interrupted):
    trainer.train_and_evaluate(
        config, str(tmp_path / 'resumed'), StopAt(dataset, 2)
    )
  assert restore_state(config, str(tmp_path / 'resumed'))[0] == 2
  # A resume that would change what the steps mean is refused untouched.
  before = snapshot(tmp_path / 'resumed')
  with pytest.raises(ConfigError) as refused:
    trainer.train_and_evaluate(
        tiny_config(
            train__num_epochs=4 * 32 / 1437, seed=1, train__batch_size=64
        ),
        str(tmp_path / 'resumed'),
    )
  assert str(refused.value) == (
      f'workdir {tmp_path}/resumed holds checkpoints (up to step 2) of a run '
      'with another config (seed: 0 -> 1; train.batch_size: 32 -> 64): '
      'resuming would change what its steps mean; use another workdir, or '
      'pass --allow_config_change to continue it with the new values '
      '(recorded in config_history.jsonl); nothing was changed'
  )
  assert snapshot(tmp_path / 'resumed') == before
  # One that changes only when things happen resumes, and is recorded.
  config.checkpoint.every_steps = 1
  caplog.clear()
  # from step 2
  trainer.train_and_evaluate(config, str(tmp_path / 'resumed'), dataset)
  assert _started(caplog) == [
      f'resuming from step 2 of 4 (checkpoint {tmp_path}/resumed/checkpoints/2)'
  ]
  assert rundir.read_config_history(str(tmp_path / 'resumed')) == [
      {'step': 2, 'changed': {'checkpoint.every_steps': [2, 1]}}
  ]
  (step_a, a), (step_b, b) = (
      restore_state(config, str(tmp_path / n)) for n in ('straight', 'resumed')
  )
  assert step_a == step_b == 4
  _params_close(a.params, b.params, 1e-6)
  _params_close(a.batch_stats, b.batch_stats, 1e-6)
  _params_close(a.opt_state, b.opt_state, 1e-6)
  lines = [json.loads(l) for l in open(tmp_path / 'resumed' / 'metrics.jsonl')]
  assert [l['step'] for l in lines if 'train/loss' in l] == [2, 4]


@pytest.mark.timeout(300)
def test_evaluation_writes_every_output(load_config, tmp_path):
  config = tiny_config(train__num_epochs=2 * 32 / 1437)
  config.eval.batch_size = 48  # 360 = 7 x 48 + 24: the last batch is padded
  final = trainer.train_and_evaluate(config, str(tmp_path / 'w'))
  assert final['eval/deterministic/count'] == 360
  heatmaps = os.listdir(tmp_path / 'w' / 'eval')
  assert heatmaps == ['class_block_rates_deterministic_step00000002.csv']
  rows = open(tmp_path / 'w' / 'eval' / heatmaps[0]).read().splitlines()
  assert len(rows) == 11 and rows[0].count('block') == 3
  # metrics.jsonl and TensorBoard hold the per-block execution rates.
  lines = [json.loads(l) for l in open(tmp_path / 'w' / 'metrics.jsonl')]
  assert len(lines[0]['train/gate_rates']) == 3
  assert (
      lines[-1]['eval/deterministic/gate_rates']
      == final['eval/deterministic/gate_rates']
  )
  assert lines[-1]['eval/deterministic/count'] == 360
  accumulator = event_accumulator.EventAccumulator(str(tmp_path / 'w'))
  accumulator.Reload()
  assert {
      'train/gate_rates/stage3/block00',
      'eval/deterministic/gate_rates/stage3/block00',
      'eval/deterministic/accuracy',
      'train/loss',
  } <= set(accumulator.Tags()['scalars'])
  shown = accumulator.Scalars('eval/deterministic/gate_rates/stage3/block00')
  assert [(e.step, e.value) for e in shown] == [
      (2, pytest.approx(final['eval/deterministic/gate_rates'][2]))
  ]


def _hparam(value):
  """A hparam's value (a protobuf Value) as Python."""
  return getattr(value, value.WhichOneof('kind'))


def test_tensorboard_compares_runs(gated_run):
  # The gated tiny run: digits.py:depth=8,epochs=1,gated=True changed in code.
  accumulator = event_accumulator.EventAccumulator(gated_run)
  accumulator.Reload()
  content = accumulator.PluginTagToContent('hparams')
  start = hparams_metadata.parse_session_start_info_plugin_data(
      content[hparams_metadata.SESSION_START_INFO_TAG]
  )
  hparams = {k: _hparam(v) for k, v in start.hparams.items()}
  assert hparams == {
      'model.name': 'cifar_resnet',
      'model.depth': 8,
      'model.width': 1,
      'model.gated': True,
      'loss.target': 0.6,
      'loss.target_schedule': 'uniform',
      'loss.targets': '[]',
      'loss.weight': 2.0,
      'loss.reduction': 'mean',
      'gates.temperature': 1.0,
      'gates.train_mode': 'sample',
      'optim.base_learning_rate': 0.1,
      'optim.schedule': 'cosine',
      'optim.weight_decay': 5e-4,
      'train.batch_size': 64,
      'train.num_epochs': 1.0,
      'seed': 0,
      'data.name': 'digits',
      # what the fixture changed from the file (`trainer.changed_fields`)
      'checkpoint.every_steps': 10,
      'eval.batch_size': 64,
      'gates.eval_modes': '["deterministic", "expected"]',
      'train.eval_every_epochs': 0.5,
      'train.log_every_steps': 4,
      'train.sync_every_steps': 1,
  }
  experiment = hparams_metadata.parse_experiment_plugin_data(
      content[hparams_metadata.EXPERIMENT_TAG]
  )
  assert {h.name for h in experiment.hparam_infos} == set(hparams)
  metric_tags = [m.name.tag for m in experiment.metric_infos]
  assert metric_tags == [
      f'eval/{mode}/{name}'
      for mode in ('deterministic', 'expected')
      for name in ('accuracy', 'gate_rate', 'gflops_per_image')
  ]
  # The tab shows each metric's last value: the final evaluation's.
  final = final_metrics(gated_run)
  for tag in metric_tags:
    assert accumulator.Scalars(tag)[-1].value == pytest.approx(final[tag])
  # The config as text, at the first step of the run.
  [text] = accumulator.Tensors('config')
  with open(os.path.join(gated_run, rundir.CONFIG_FILE)) as f:
    assert (text.step, text.tensor_proto.string_val[0].decode()) == (
        1,
        f'```json\n{f.read()}\n```',
    )
  # Per-block scalars named by stage (3 stages of 1 block).
  scalars = set(accumulator.Tags()['scalars'])
  assert {
      'train/gate_rates/stage1/block00',
      'eval/expected/gate_rates/stage2/block00',
  } <= scalars
  assert not [t for t in scalars if t.endswith('/block02')]
  shown = accumulator.Scalars('eval/expected/gate_rates/stage3/block00')
  assert shown[-1].value == pytest.approx(final['eval/expected/gate_rates'][2])
  # The class x block matrix of each evaluation: 16 x 16 pixels a cell.
  for mode in ('deterministic', 'expected'):
    images = accumulator.Images(f'eval/{mode}/class_block_rates')
    assert [(i.step, i.height, i.width) for i in images] == [
        (11, 160, 48),
        (22, 160, 48),
    ]
    pixels = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)))
    assert pixels.shape == (160, 48)
    csv = np.loadtxt(
        rundir.class_block_rates_path(gated_run, mode, 22),
        delimiter=',',
        skiprows=1,
    )[:, 1:]
    for row, col in ((0, 0), (3, 1), (9, 2)):
      # each cell's pixels: the nearest 8-bit level (CSV: 6 decimals)
      cell = pixels[16 * row : 16 * row + 16, 16 * col : 16 * col + 16]
      assert (cell == cell[0, 0]).all()
      assert abs(cell[0, 0] - 255 * csv[row, col]) <= 0.5 + 1e-3


def test_changed_fields_are_the_overridden_and_the_differing_ones():
  config_arg = os.path.join(REPO, 'configs', 'digits.py:depth=8')
  # momentum: overridden with the file's own value, still a change asked for
  overrides = {'optim.momentum': '0.9', 'seed': '1'}
  config = config_lib.load_config(config_arg, overrides)
  config.train.log_every_steps = 4
  assert trainer.changed_fields(config, config_arg, overrides) == [
      'optim.momentum',
      'seed',
      'train.log_every_steps',
  ]


class _NaNAfter:
  """The digits dataset with NaN images from step `bad` on."""

  def __init__(self, dataset, bad):
    self.dataset, self.bad = dataset, bad

  def __getattr__(self, name):
    return getattr(self.dataset, name)

  def train_batch(self, step):
    batch = self.dataset.train_batch(step)
    if step >= self.bad:
      batch['image'] = np.full_like(batch['image'], np.nan)
    return batch


@pytest.mark.timeout(300)
def test_nonfinite_loss_stops_and_keeps_last_checkpoint(load_config, tmp_path):
  config = tiny_config(train__num_epochs=6 * 32 / 1437)
  dataset = _NaNAfter(input_pipeline.create_dataset(config), bad=3)
  with pytest.raises(
      trainer.NonFiniteLossError,
      match=r'the loss is not finite at step 3 .* the last checkpoint \(step 2\) '
      r'is kept',
  ):
    trainer.train_and_evaluate(config, str(tmp_path / 'w'), dataset)
  step, restored = restore_state(config, str(tmp_path / 'w'))
  assert step == 2
  assert all(
      np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored.params)
  )


class _DeletesWorkdirAt:
  """The digits dataset that deletes `workdir` when batch `step` is read."""

  def __init__(self, dataset, workdir, step):
    self.dataset, self.workdir, self.step = dataset, workdir, step

  def __getattr__(self, name):
    return getattr(self.dataset, name)

  def train_batch(self, step):
    if step == self.step:
      shutil.rmtree(self.workdir)
    return self.dataset.train_batch(step)


@pytest.mark.timeout(300)
def test_deleted_workdir_stops_training_at_the_next_log(load_config, tmp_path):
  # 6 steps, a log every 2, the only checkpoint after the last step.
  config = tiny_config(
      train__num_epochs=6 * 32 / 1437, checkpoint__every_steps=100
  )
  workdir = str(tmp_path / 'w')
  dataset = _DeletesWorkdirAt(
      input_pipeline.create_dataset(config), workdir, step=2
  )
  with pytest.raises(WorkdirGoneError) as raised:
    trainer.train_and_evaluate(config, workdir, dataset)
  assert str(raised.value) == (
      f'workdir {workdir} was deleted while training (its workdir.lock is '
      'gone); training stopped at step 4; run the same command again to '
      'start over'
  )
  assert raised.value.exit_code == 1
  assert not os.path.exists(workdir)  # nothing written there afterwards


def _started(caplog) -> list[str]:
  """The trainer's start lines (and finished line) in `caplog`."""
  return [
      r.getMessage()
      for r in caplog.records
      if r.name == trainer.__name__
      and r.getMessage().startswith(('resuming ', 'starting ', 'already '))
  ]


class _JaxWork:
  """Counts what JAX traces, lowers, compiles or loads from its cache while
  entered (its public monitoring events)."""

  PREFIXES = ('/jax/core/compile/', '/jax/compilation_cache/')

  def __init__(self):
    self.count = 0

  def _event(self, event, *args, **kwargs):
    del args, kwargs
    self.count += event.startswith(self.PREFIXES)

  def __enter__(self):
    jax.monitoring.register_event_listener(self._event)
    jax.monitoring.register_event_duration_secs_listener(self._event)
    return self

  def __exit__(self, *exc_info):
    jax.monitoring.unregister_event_listener(self._event)
    jax.monitoring.unregister_event_duration_listener(self._event)


@pytest.mark.timeout(300)
def test_finished_rerun_compiles_nothing_and_init_from_says_so(
    gated_run, tmp_path, caplog, capsys
):
  # The session's tiny run: 22 steps, evaluated in two modes, checkpoint 22.
  workdir = gated_run
  config = rundir.read_config(workdir)
  caplog.set_level(logging.INFO, logger=trainer.__name__)
  capsys.readouterr()
  before = snapshot(workdir)
  with _JaxWork() as work:
    final = trainer.train_and_evaluate(config, workdir)
  assert work.count == 0  # nothing traced, compiled or loaded
  assert snapshot(workdir) == before
  assert _started(caplog) == [
      f'already finished at step 22 (checkpoint {workdir}/checkpoints/22); '
      'nothing to train, the final evaluation is the stored one'
  ]
  stored = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert {'step': 22, **final} == stored[-1]
  eval_csv = f'{workdir}/eval/class_block_rates_%s_step00000022.csv'
  assert capsys.readouterr().out.splitlines() == [
      *progress.eval_lines(22, final),
      f'outputs in {workdir}:',
      f'  metrics: {workdir}/metrics.jsonl',
      f'  per-class block rates: {eval_csv % "deterministic"}',
      f'  per-class block rates: {eval_csv % "expected"}',
      f"  checkpoint: {workdir}/checkpoints/22 (adanet_jax.load('{workdir}'))",
      f'  curves: tensorboard --logdir {workdir}',
  ]
  # Asked for an evaluation mode it does not hold, it is not finished: the
  # rerun evaluates the last checkpoint in that mode, shown once, and then it
  # is finished.
  config.gates.eval_modes = ('sample',)
  assert trainer.stored_final_eval(workdir, _plan(config)) is None
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  caplog.clear()
  final = trainer.train_and_evaluate(config, copy)
  assert _started(caplog) == [
      f'resuming from step 22 of 22 (checkpoint {copy}/checkpoints/22)'
  ]
  out = capsys.readouterr().out.splitlines()
  assert out[:2] == [*progress.eval_lines(22, final), f'outputs in {copy}:']
  assert trainer.stored_final_eval(copy, _plan(config)) == final
  # A new workdir from its checkpoint ("killed" before its first step).
  caplog.clear()
  config = tiny_config(train__num_epochs=4 * 32 / 1437, init_from=workdir)
  dataset = StopAt(input_pipeline.create_dataset(config), 0)
  with _JaxWork() as work, pytest.raises(Interrupted):
    trainer.train_and_evaluate(config, str(tmp_path / 'w'), dataset)
  assert work.count > 0  # the counter sees the initialisation
  assert _started(caplog) == [
      f'starting from init_from {workdir} (its parameters and BatchNorm '
      'statistics, a fresh optimizer): step 0 of 4'
  ]


def _plan(config):
  steps_per_epoch = input_pipeline.create_dataset(config).steps_per_epoch
  return plan_lib.make_plan(config, steps_per_epoch)


class _Clock:

  def __init__(self, *times):
    self.times = list(times)

  def __call__(self):
    return self.times.pop(0)


def test_eta_counts_only_the_steps_after_the_first():
  # 100 steps from step 10; the launch's first step compiles (30 s), then a
  # step takes 0.5 s, then 1.5 s, then 1 s.
  timer = trainer.Progress(100, 32, clock=_Clock(30.0, 35.0, 50.0, 119.0))
  timer.first_step_done(11)
  assert timer.update(21) == {
      'train/progress': 0.21,
      'train/images_per_s': 64.0,  # 10 steps of 32 images in 5 s
      'train/eta_s': 39.5,  # 0.5 s x 79 steps left
  }
  assert timer.update(31) == {
      'train/progress': 0.31,
      'train/images_per_s': 32 * 10 / 15.0,
      'train/eta_s': 69.0,  # the mean since the first step (1 s) x 69
  }
  assert timer.update(100) == {
      'train/progress': 1.0,
      'train/images_per_s': 32.0,
      'train/eta_s': 0.0,
  }
  # A log right after the first step: nothing timed yet.
  timer = trainer.Progress(100, 32, clock=_Clock(30.0, 30.5))
  timer.first_step_done(1)
  assert timer.update(1) == {'train/progress': 0.01}


def test_batch_not_divisible_by_devices_is_refused(load_config, tmp_path):
  config = tiny_config(train__batch_size=36)
  with pytest.raises(
      ConfigError,
      match=r'train.batch_size=36 must be a positive multiple of '
      r'the device count \(8 devices\)',
  ):
    trainer.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w')


# (overrides of tiny_config with {tmp} for the test's directory, workdir,
# the error): each refused before anything is created or changed.
REFUSALS = {
    'zero steps': (
        dict(train__num_epochs=0.01),
        '{tmp}/w',
        'train.num_epochs=0.01 trains 0 steps (44 steps per epoch at '
        'train.batch_size=32): must give at least 1 step',
    ),
    'batch larger than the data': (
        dict(train__batch_size=2048),
        '{tmp}/w',
        'train.batch_size=2048 is larger than the 1437 training examples of '
        'digits',
    ),
    'wrong class count': (
        dict(model__num_classes=8),
        '{tmp}/w',
        'model.num_classes=8 but digits has 10 classes',
    ),
    'init_from an empty directory': (
        dict(init_from='{tmp}/empty'),
        '{tmp}/w',
        "'{tmp}/empty' holds no checkpoint",
    ),
    'init_from an unreadable PyTorch file': (
        dict(init_from='{tmp}/bad.pth.tar'),
        '{tmp}/w',
        "cannot read '{tmp}/bad.pth.tar' as a PyTorch file: ",
    ),
    'init_from a file that is no PyTorch file': (
        dict(init_from='{tmp}/notes.pth'),
        '{tmp}/w',
        "init_from='{tmp}/notes.pth' is neither a PyTorch file (written by "
        'torch.save) nor a workdir or checkpoint directory',
    ),
    'torchvision ResNet-18 weights': (
        dict(init_from='{tmp}/resnet18.pth'),
        '{tmp}/w',
        '{tmp}/resnet18.pth: a torchvision ResNet state_dict fits only the '
        "bottleneck ResNets: set model.name='imagenet_resnet' (depth 50, 101 "
        'or 152)',
    ),
    'unprepared CIFAR-10, data_dir under ~': (
        dict(
            data__name='cifar10',
            data__channels=3,
            data__image_size=32,
            data__data_dir='~/empty',
        ),
        '{tmp}/w',
        'dataset cifar10 is not prepared in {tmp}/empty (no ',
    ),
    'damaged model.json, workdir under ~': (
        {},
        '~/damaged',
        '{tmp}/damaged/checkpoints/model.json is damaged (not JSON: '
        'Expecting property name enclosed in double quotes: line 1 column 2 '
        '(char 1)); use another workdir, or delete '
        '{tmp}/damaged/checkpoints/model.json; nothing was changed',
    ),
}


def _save_torchvision_resnet18(path):
  """The state_dict layout and shapes of torchvision's ResNet-18 (zeros)."""
  import torch  # pylint: disable=import-outside-toplevel

  def bn(prefix, c):
    return {
        f'{prefix}.weight': torch.zeros(c),
        f'{prefix}.bias': torch.zeros(c),
        f'{prefix}.running_mean': torch.zeros(c),
        f'{prefix}.running_var': torch.ones(c),
        f'{prefix}.num_batches_tracked': torch.tensor(0),
    }

  sd = {'conv1.weight': torch.zeros(64, 3, 7, 7), **bn('bn1', 64)}
  c_in = 64
  for layer, c in enumerate((64, 128, 256, 512), 1):
    for block in range(2):
      p = f'layer{layer}.{block}'
      first_in = c_in if block == 0 else c
      sd[f'{p}.conv1.weight'] = torch.zeros(c, first_in, 3, 3)
      sd.update(bn(f'{p}.bn1', c))
      sd[f'{p}.conv2.weight'] = torch.zeros(c, c, 3, 3)
      sd.update(bn(f'{p}.bn2', c))
      if block == 0 and layer > 1:
        sd[f'{p}.downsample.0.weight'] = torch.zeros(c, c_in, 1, 1)
        sd.update(bn(f'{p}.downsample.1', c))
    c_in = c
  sd['fc.weight'], sd['fc.bias'] = torch.zeros(1000, 512), torch.zeros(1000)
  torch.save(sd, path)


@pytest.mark.parametrize('case', sorted(REFUSALS))
def test_bad_input_is_refused_before_anything_is_created(
    tmp_path, tmp_path_factory, monkeypatch, case
):
  overrides, workdir, error = REFUSALS[case]
  (tmp_path / 'empty').mkdir()
  # a zip's first bytes, as torch.save writes, then nothing readable
  (tmp_path / 'bad.pth.tar').write_bytes(b'PK\x03\x04 cut short')
  (tmp_path / 'notes.pth').write_text('not a torch file')
  (tmp_path / 'damaged' / 'checkpoints').mkdir(parents=True)
  (tmp_path / 'damaged' / 'checkpoints' / 'model.json').write_text('{')
  if case == 'torchvision ResNet-18 weights':
    _save_torchvision_resnet18(tmp_path / 'resnet18.pth')
  monkeypatch.setenv('HOME', str(tmp_path))
  # matplotlib and keras, imported by tfds, write under the home otherwise
  elsewhere = str(tmp_path_factory.mktemp('libraries'))
  monkeypatch.setenv('MPLCONFIGDIR', elsewhere)
  monkeypatch.setenv('KERAS_HOME', elsewhere)
  before = snapshot(tmp_path)
  config = tiny_config(
      **{
          k: v.format(tmp=tmp_path) if isinstance(v, str) else v
          for k, v in overrides.items()
      }
  )
  with pytest.raises(ConfigError) as refused:
    trainer.train_and_evaluate(config, workdir.format(tmp=tmp_path))
  assert str(refused.value).startswith(error.format(tmp=tmp_path))
  assert '\n' not in str(refused.value)
  assert snapshot(tmp_path) == before


def test_is_time_has_one_step_convention():
  # `step` counts completed steps; actions run every `every` and after the last.
  assert [s for s in range(1, 11) if trainer.is_time(s, 4, 10)] == [4, 8, 10]
  assert [s for s in range(1, 11) if trainer.is_time(s, 0, 10)] == [10]
  assert [s for s in range(1, 6) if trainer.is_time(s, 1, 5)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize('fault', ['full disk', 'immutable eval/'])
def test_failed_class_rates_write_is_one_line_and_leaves_no_file(
    small_disk, fault
):
  workdir = small_disk('64k')
  (workdir / 'eval').mkdir()
  if fault == 'full disk':
    fill(workdir)
  else:
    make_immutable(workdir / 'eval')
  matrices = {'deterministic': np.full((10, 8), 0.5)}
  run = trainer.Run(
      setup=types.SimpleNamespace(evaluator=lambda state, data: ({}, matrices)),
      dataset=None,
      workdir=str(workdir),
      checkpointer=None,
      logger=None,
      lock=None,
  )
  path = workdir / 'eval' / 'class_block_rates_deterministic_step00000022.csv'
  cause = {
      'full disk': 'No space left on device [errno 28]',
      'immutable eval/': 'Operation not permitted [errno 1]',
  }[fault]
  with pytest.raises(WorkdirWriteError) as e:
    run.evaluate(state=None, step=22)
  assert str(e.value) == (
      f'writing {path} failed ({cause}); training stopped; run the same '
      'command again to resume from the last checkpoint'
  )
  assert os.listdir(workdir / 'eval') == []
