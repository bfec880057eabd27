"""Training metrics: summing on the device, summarising on the host, and
writing to the console, TensorBoard and `workdir/metrics.jsonl`.

Only process 0 writes; the others only log. On a resume, records past the
restored step (written before an interruption, redone now) are dropped from
metrics.jsonl, and TensorBoard is told to drop them from its event files, so
each step is shown once however often the run resumed.
"""

import contextlib
import itertools
import json
import os
import socket
import time

import jax
import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from adanet_jax.errors import reported_write
from adanet_jax.train import progress, rundir

# Numbers event files opened by this process: TensorBoard reads a directory's
# files in name order, and two opened within a second must not share a name.
_EVENT_FILES = itertools.count()

# Keys of the step metrics combined by minimum instead of sum.
MIN_KEYS = ('first_nonfinite_step',)


def accumulate(total: dict | None, new: dict) -> dict:
  """Adds one step's metric sums to the running sums (on the device)."""
  if total is None:
    return new
  return {
      k: (jax.numpy.minimum if k in MIN_KEYS else jax.numpy.add)(
          total[k], new[k]
      )
      for k in total
  }


def summarize_train(sums: dict) -> dict:
  """Means over the images of the steps summed in `sums` (host numpy)."""
  count = float(sums['count'])
  rates = np.asarray(sums['gates'], np.float64) / count
  summary = {
      'loss': float(sums['loss']) / count,
      'ce': float(sums['ce']) / count,
      'target_loss': float(sums['target_loss']) / count,
      'accuracy': float(sums['correct']) / count,
      'gate_rate': float(rates.mean()),
      'gate_rates': [float(r) for r in rates],
  }
  if 'learning_rate' in sums:
    summary['learning_rate'] = float(sums['learning_rate']) / count
  return summary


class TensorBoardWriter:
  """Scalars in a TensorBoard event file of `logdir`, written record by record.

  Written with TensorBoard's own protos and record framing, not through
  TensorFlow, whose import would slow every start of a run (README). A run
  (re)started at `start_step`, 0 included, writes a SessionLog START event at
  start_step + 1: on reading it TensorBoard discards the steps after
  `start_step` that earlier event files hold (logged before an interruption
  or by a run whose checkpoints are gone, logged again now).
  """

  def __init__(self, logdir: str, start_step: int | None = None):
    name = (
        f'events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.'
        f'{next(_EVENT_FILES):04d}'
    )
    path = os.path.join(logdir, name)
    self._file = open(path, 'wb')
    self._records = RecordWriter(self._file)
    try:
      self._write(event_pb2.Event(file_version='brain.Event:2'))
      if start_step is not None:
        self._write(
            event_pb2.Event(
                step=start_step + 1,
                session_log=event_pb2.SessionLog(
                    status=event_pb2.SessionLog.START
                ),
            )
        )
    except OSError:  # a full disk: no headless file left behind
      with contextlib.suppress(OSError):
        self._file.close()
      os.remove(path)
      raise

  def write_scalars(self, step: int, scalars: dict) -> None:
    values = [
        summary_pb2.Summary.Value(tag=k, simple_value=float(v))
        for k, v in scalars.items()
    ]
    self._write(
        event_pb2.Event(step=step, summary=summary_pb2.Summary(value=values))
    )

  def _write(self, event) -> None:
    event.wall_time = time.time()
    self._records.write(event.SerializeToString())
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class MetricLogger:
  """Writes metric dicts to the console (`progress.ConsoleWriter`: a progress
  line per log step, a line per evaluation mode), TensorBoard
  (`TensorBoardWriter`; a per-block list becomes `name/block07` scalars) and
  metrics.jsonl (everything, lists kept)."""

  def __init__(
      self,
      workdir: str,
      num_steps: int = 0,
      steps_per_epoch: int = 1,
      start_step: int | None = None,
  ):
    """`start_step`: the step the run (re)starts from; records past it are
    dropped from metrics.jsonl (None: keep everything).

    Raises:
      WorkdirWriteError: the files cannot be written (a full disk).
    """
    self.chief = jax.process_index() == 0
    self.console = progress.ConsoleWriter(max(num_steps, 1), steps_per_epoch)
    self.tensorboard = self.jsonl = None
    self.workdir = workdir
    if not self.chief:
      return
    with self._write_errors('the metrics files'):
      self.tensorboard = TensorBoardWriter(workdir, start_step)
      if start_step is not None:
        rundir.drop_metrics_after(workdir, start_step)
      self.jsonl = open(os.path.join(workdir, rundir.METRICS_FILE), 'a')

  def write(self, step: int, metrics: dict) -> None:
    """Raises WorkdirWriteError when a file cannot be written (a full disk)."""
    scalars, per_block = {}, {}
    for key, value in metrics.items():
      if isinstance(value, (list, tuple)):
        per_block.update(
            {f'{key}/block{i:02d}': v for i, v in enumerate(value)}
        )
      else:
        scalars[key] = value
    if not self.chief:
      return
    self.console.write(step, scalars)
    with self._write_errors(f'the metrics of step {step}'):
      self.tensorboard.write_scalars(step, {**scalars, **per_block})
      self.jsonl.write(json.dumps({'step': step, **metrics}) + '\n')
      self.jsonl.flush()

  def _write_errors(self, what: str):
    """OSErrors inside become one WorkdirWriteError line. Each record is
    flushed whole or cut short; a resume drops a cut line (rundir)."""
    return reported_write(f'{what} to {self.workdir}', rundir.STOPPED_RESUME)

  def close(self) -> None:
    """Closes the files. Every record was flushed when written: a failure
    here (the disk filled meanwhile) loses nothing and is not raised."""
    for f in (self.tensorboard, self.jsonl):
      if f is not None:
        with contextlib.suppress(OSError):
          f.close()
