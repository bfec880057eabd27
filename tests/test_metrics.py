"""Tests of `adanet_jax.train.metrics`: sums on the device, means on the host."""

import os
import subprocess
import sys

from conftest import fill
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing import (
    event_accumulator,
    plugin_event_accumulator,
)
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from adanet_jax.errors import WorkdirWriteError
from adanet_jax.train import metrics


def test_accumulate_sums_and_keeps_the_first_nonfinite_step():
  a = {
      'count': jnp.float32(2),
      'loss': jnp.float32(3.0),
      'first_nonfinite_step': jnp.inf,
  }
  b = {
      'count': jnp.float32(2),
      'loss': jnp.float32(5.0),
      'first_nonfinite_step': jnp.float32(7),
  }
  c = {
      'count': jnp.float32(2),
      'loss': jnp.float32(1.0),
      'first_nonfinite_step': jnp.float32(9),
  }
  total = metrics.accumulate(
      metrics.accumulate(metrics.accumulate(None, a), b), c
  )
  assert (float(total['count']), float(total['loss'])) == (6.0, 9.0)
  assert float(total['first_nonfinite_step']) == 7.0


def test_summarize_train_means_over_images():
  sums = {
      'count': 4.0,
      'loss': 6.0,
      'ce': 4.0,
      'target_loss': 2.0,
      'correct': 3.0,
      'gates': np.array([4.0, 2.0]),
      'learning_rate': 0.4,
  }
  s = metrics.summarize_train(sums)
  assert (s['loss'], s['ce'], s['target_loss'], s['accuracy']) == (
      1.5,
      1.0,
      0.5,
      0.75,
  )
  assert s['gate_rates'] == [1.0, 0.5] and s['gate_rate'] == 0.75
  assert s['learning_rate'] == pytest.approx(0.1)


def _tensorboard_scalars(logdir: str, tag: str) -> list[tuple[int, float]]:
  """(step, value) of `tag` as TensorBoard shows them (restarts purged)."""
  accumulator = event_accumulator.EventAccumulator(logdir)
  accumulator.Reload()
  return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def test_tensorboard_shows_each_step_once_after_a_resume(tmp_path):
  # A run logs steps 1-4 and is interrupted after its checkpoint of step 2;
  # the rerun resumes at step 2 and logs steps 3-5 with other values.
  first = metrics.TensorBoardWriter(str(tmp_path))
  for step in (1, 2, 3, 4):
    first.write_scalars(
        step, {'train/loss': step, 'train/gate_rates/block00': 0.5}
    )
  first.close()
  # Opened within the same second: the files' names still order them.
  second = metrics.TensorBoardWriter(str(tmp_path), start_step=2)
  for step in (3, 4, 5):
    second.write_scalars(
        step, {'train/loss': 10 * step, 'train/gate_rates/block00': 0.25}
    )
  second.close()
  assert len(os.listdir(tmp_path)) == 2
  assert _tensorboard_scalars(str(tmp_path), 'train/loss') == [
      (1, 1.0),
      (2, 2.0),
      (3, 30.0),
      (4, 40.0),
      (5, 50.0),
  ]
  assert [
      v
      for _, v in _tensorboard_scalars(
          str(tmp_path), 'train/gate_rates/block00'
      )
  ] == [0.5, 0.5, 0.25, 0.25, 0.25]


def test_tensorboard_shows_each_step_once_after_a_restart_from_step_0(
    tmp_path,
):
  # Killed before its first checkpoint (or its checkpoints deleted), the
  # rerun starts again at step 0 and logs steps 2 and 4 with other values.
  for scale in (1, 10):
    writer = metrics.TensorBoardWriter(str(tmp_path), start_step=0)
    for step in (2, 4):
      writer.write_scalars(step, {'train/loss': scale * step})
    writer.close()
  assert _tensorboard_scalars(str(tmp_path), 'train/loss') == [
      (2, 20.0),
      (4, 40.0),
  ]


def _run_info(text: str, target: float = 0.5) -> metrics.RunInfo:
  return metrics.RunInfo(
      hparams={
          'loss.target': target,
          'model.gated': True,
          'loss.targets': '[]',
      },
      metric_tags=('eval/deterministic/accuracy',),
      config_text=text,
      block_tags=('stage1/block00',),
  )


def test_run_start_records_are_shown_once_per_start_after_restarts(tmp_path):
  # Started at step 0, restarted at 0 (killed before its first checkpoint),
  # then resumed from the checkpoint of step 2 with another config.
  for start, text, target in (
      (0, 'first', 0.5),
      (0, 'again', 0.5),
      (2, 'resumed', 0.7),
  ):
    writer = metrics.TensorBoardWriter(
        str(tmp_path), start, metrics.run_summaries(_run_info(text, target))
    )
    writer.write_scalars(start + 2, {'train/loss': start + 2})
    writer.close()
  # The accumulator TensorBoard's plugins read through (the legacy one keeps
  # tensors past a restart marker).
  accumulator = plugin_event_accumulator.EventAccumulator(str(tmp_path))
  accumulator.Reload()
  shown = [
      (e.step, e.tensor_proto.string_val[0].decode())
      for e in accumulator.Tensors(metrics.CONFIG_TAG)
  ]
  assert shown == [(1, 'again'), (3, 'resumed')]
  assert _tensorboard_scalars(str(tmp_path), 'train/loss') == [
      (2, 2.0),
      (4, 4.0),
  ]
  # One session start and experiment for the run, as the hparams plugin
  # reads them: those of its first start.
  content = accumulator.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
  start = hparams_metadata.parse_session_start_info_plugin_data(
      content[hparams_metadata.SESSION_START_INFO_TAG]
  )
  assert {k: str(v).strip() for k, v in start.hparams.items()} == {
      'loss.target': 'number_value: 0.5',
      'model.gated': 'bool_value: true',
      'loss.targets': 'string_value: "[]"',
  }
  experiment = hparams_metadata.parse_experiment_plugin_data(
      content[hparams_metadata.EXPERIMENT_TAG]
  )
  assert [(h.name, h.type) for h in experiment.hparam_infos] == [
      ('loss.target', api_pb2.DATA_TYPE_FLOAT64),
      ('model.gated', api_pb2.DATA_TYPE_BOOL),
      ('loss.targets', api_pb2.DATA_TYPE_STRING),
  ]


def test_block_tags_name_stage_and_block():
  assert metrics.block_tags((2, 1)) == (
      'stage1/block00',
      'stage1/block01',
      'stage2/block00',
  )


def test_tensorboard_writer_does_not_import_tensorflow():
  # TensorFlow's import costs every start of a run seconds; the writer needs
  # none, for scalars, hparams, the config text or the class x block images.
  code = (
      'import sys, tempfile; import numpy as np; '
      'from adanet_jax import config_lib; from adanet_jax.train import metrics; '
      'info = metrics.run_info(config_lib.get_base_config()); '
      'w = metrics.TensorBoardWriter(tempfile.mkdtemp(), 0, '
      'metrics.run_summaries(info)); '
      'w.write_scalars(1, {"a": 1.0}); '
      'w.write_summary(1, metrics.matrix_image("m", np.eye(3))); '
      'print("tensorflow" in sys.modules)'
  )
  out = subprocess.run(
      [sys.executable, '-c', code], capture_output=True, text=True, check=True
  )
  assert out.stdout.strip() == 'False'


def test_metrics_files_on_a_full_disk_are_one_line_and_no_empty_file(
    small_disk,
):
  workdir = small_disk('64k')
  fill(workdir)
  with pytest.raises(WorkdirWriteError) as e:
    metrics.MetricLogger(str(workdir), _run_info('config'), num_steps=4)
  assert str(e.value) == (
      f'writing the metrics files to {workdir} failed (No space left on '
      'device [errno 28]); training stopped; run the same command again to '
      'resume from the last checkpoint'
  )
  assert os.listdir(workdir) == ['filler']


def test_class_block_images_on_a_full_disk_are_one_line(small_disk):
  workdir = small_disk('64k')
  logger = metrics.MetricLogger(str(workdir), _run_info('config'), num_steps=4)
  fill(workdir)
  # CIFAR-100 x ResNet-110: more than the last page of the file holds
  matrix = np.random.default_rng(0).random((100, 54))
  try:
    with pytest.raises(WorkdirWriteError) as e:
      logger.write_class_block_rates(22, {'deterministic': matrix})
  finally:
    logger.close()
  assert str(e.value) == (
      f'writing the class x block images of step 22 to {workdir} failed (No '
      'space left on device [errno 28]); training stopped; run the same '
      'command again to resume from the last checkpoint'
  )
