"""Tests of `adanet_jax.train.metrics`: sums on the device, means on the host."""

import os
import subprocess
import sys

from conftest import fill
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

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


def test_tensorboard_writer_does_not_import_tensorflow():
  # TensorFlow's import costs every start of a run seconds; the writer needs none.
  code = (
      'import sys, tempfile; from adanet_jax.train import metrics; '
      'metrics.TensorBoardWriter(tempfile.mkdtemp()).write_scalars(1, {"a": 1.0}); '
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
    metrics.MetricLogger(str(workdir), num_steps=4)
  assert str(e.value) == (
      f'writing the metrics files to {workdir} failed (No space left on '
      'device [errno 28]); training stopped; run the same command again to '
      'resume from the last checkpoint'
  )
  assert os.listdir(workdir) == ['filler']
