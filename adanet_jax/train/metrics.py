"""Training metrics: summing on the device, summarising on the host, and
writing to the console, TensorBoard and `workdir/metrics.jsonl`.

Only process 0 writes; the others only log. On a resume, records past the
restored step (written before an interruption, redone now) are dropped from
metrics.jsonl, and TensorBoard is told to drop them from its event files, so
each step is shown once however often the run resumed.

Besides scalars, TensorBoard gets what compares runs (`RunInfo`): the run's
hparams with the metrics its HPARAMS tab lists, the resolved config as text,
and at each evaluation the per-class x per-block execution matrix as an image.
"""

import contextlib
import dataclasses
import functools
import itertools
import json
import os
import socket
import struct
import time
from typing import Sequence
import zlib

import jax
import ml_collections
import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer.record_writer import RecordWriter

from adanet_jax.errors import reported_write
from adanet_jax.model import factory
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


# The config fields every run's hparams hold (TensorBoard's HPARAMS tab);
# `RunInfo` adds the fields a run changes.
MAIN_HPARAMS = (
    'model.name',
    'model.depth',
    'model.width',
    'model.gated',
    'loss.target',
    'loss.target_schedule',
    'loss.targets',
    'loss.weight',
    'loss.reduction',
    'gates.temperature',
    'gates.train_mode',
    'optim.base_learning_rate',
    'optim.schedule',
    'optim.weight_decay',
    'train.batch_size',
    'train.num_epochs',
    'seed',
    'data.name',
)
# The evaluation metrics (`eval/<mode>/<name>`, last value) the HPARAMS tab
# compares runs by.
HPARAM_METRICS = ('accuracy', 'gate_rate', 'gflops_per_image')
CONFIG_TAG = 'config'
# A class x block image's cells are squares of this many pixels, fewer where
# the matrix is large, so small matrices stay visible and large ones small.
MAX_CELL_PX, MAX_IMAGE_PX = 16, 512


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """What TensorBoard shows of a run besides its scalars.

  Attributes:
    hparams: {config field: bool, number or string}; tuples as JSON.
    metric_tags: the scalar tags the HPARAMS tab compares runs by.
    config_text: the resolved config, markdown.
    block_tags: tag suffix of each block, in block order.
  """

  hparams: dict
  metric_tags: tuple[str, ...]
  config_text: str
  block_tags: tuple[str, ...]


def run_info(
    config: ml_collections.ConfigDict, hparam_fields: Sequence[str] = ()
) -> RunInfo:
  """The `RunInfo` of `config`: hparams of `MAIN_HPARAMS` and
  `hparam_fields`, the `HPARAM_METRICS` of each evaluation gate mode."""
  modes = config.gates.eval_modes
  modes = (modes,) if isinstance(modes, str) else tuple(modes)
  fields = dict.fromkeys((*MAIN_HPARAMS, *hparam_fields))
  return RunInfo(
      hparams={f: _hparam_value(_field(config, f)) for f in fields},
      metric_tags=tuple(
          f'eval/{mode}/{name}' for mode in modes for name in HPARAM_METRICS
      ),
      config_text=f'```json\n{rundir.config_text(config)}\n```',
      block_tags=block_tags(factory.stage_sizes(config.model)),
  )


def block_tags(stage_sizes: Sequence[int]) -> tuple[str, ...]:
  """`stage<s>/block<i>` of each block: stages from 1, blocks within a
  stage from 0, as the model's `stage<s>_block<i>` variables."""
  return tuple(
      f'stage{stage}/block{i:02d}'
      for stage, size in enumerate(stage_sizes, 1)
      for i in range(size)
  )


def _field(config: ml_collections.ConfigDict, dotted: str):
  return functools.reduce(lambda c, k: c[k], dotted.split('.'), config)


def _hparam_value(value):
  """A value of the hparams plugin: bool, number or string (else JSON)."""
  if isinstance(value, (bool, int, float, str)):
    return value
  return json.dumps(list(value) if isinstance(value, tuple) else value)


def run_summaries(info: RunInfo) -> list[summary_pb2.Summary]:
  """The hparams plugin's session start info and experiment (the hparams
  with their types, the metrics), and the config text."""
  types = {
      bool: api_pb2.DATA_TYPE_BOOL,
      int: api_pb2.DATA_TYPE_FLOAT64,
      float: api_pb2.DATA_TYPE_FLOAT64,
      str: api_pb2.DATA_TYPE_STRING,
  }
  experiment = api_pb2.Experiment(
      hparam_infos=[
          api_pb2.HParamInfo(name=name, type=types[type(value)])
          for name, value in info.hparams.items()
      ],
      metric_infos=[
          api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag))
          for tag in info.metric_tags
      ],
  )
  experiment_summary = summary_pb2.Summary()
  experiment_summary.value.add(
      tag=hparams_metadata.EXPERIMENT_TAG,
      metadata=hparams_metadata.create_summary_metadata(
          plugin_data_pb2.HParamsPluginData(experiment=experiment)
      ),
      tensor=hparams_metadata.NULL_TENSOR,
  )
  return [
      hparams_summary.hparams_pb(info.hparams),
      experiment_summary,
      text_summary.text_pb(CONFIG_TAG, info.config_text),
  ]


def matrix_image(tag: str, matrix: np.ndarray) -> summary_pb2.Summary:
  """`matrix` (rows x columns, values in [0, 1]) as a grey PNG image: 0
  black, 1 white, a fixed scale so images compare across steps and runs;
  each cell a square of `cell_px(matrix.shape)` pixels."""
  cell = cell_px(matrix.shape)
  levels = np.round(np.clip(matrix, 0.0, 1.0) * 255).astype(np.uint8)
  pixels = np.repeat(np.repeat(levels, cell, axis=0), cell, axis=1)
  height, width = pixels.shape
  image = summary_pb2.Summary.Image(
      height=height,
      width=width,
      colorspace=1,  # grey
      encoded_image_string=_png(pixels),
  )
  return summary_pb2.Summary(
      value=[summary_pb2.Summary.Value(tag=tag, image=image)]
  )


def cell_px(shape: tuple[int, int]) -> int:
  """The side in pixels of one matrix cell in `matrix_image`."""
  return max(1, min(MAX_CELL_PX, MAX_IMAGE_PX // max(shape)))


def _png(grey: np.ndarray) -> bytes:
  """An 8-bit greyscale PNG of `grey` (rows x columns of uint8)."""

  def chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return (
        struct.pack('>I', len(data))
        + body
        + struct.pack('>I', zlib.crc32(body))
    )

  height, width = grey.shape
  rows = b''.join(b'\0' + row.tobytes() for row in grey)  # filter: none
  return b''.join(
      [
          b'\x89PNG\r\n\x1a\n',
          chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)),
          chunk(b'IDAT', zlib.compress(rows)),
          chunk(b'IEND', b''),
      ]
  )


class TensorBoardWriter:
  """Summaries in a TensorBoard event file of `logdir`, written record by
  record.

  Written with TensorBoard's own protos and record framing, not through
  TensorFlow, whose import would slow every start of a run (README). A run
  (re)started at `start_step`, 0 included, writes a SessionLog START event at
  start_step + 1: on reading it TensorBoard discards the steps after
  `start_step` that earlier event files hold (logged before an interruption
  or by a run whose checkpoints are gone, logged again now). The `run_start`
  summaries (`run_summaries`) go with it, at the same step, so a later
  restart from the same step replaces them too.
  """

  def __init__(
      self,
      logdir: str,
      start_step: int | None = None,
      run_start: Sequence[summary_pb2.Summary] = (),
  ):
    name = (
        f'events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.'
        f'{next(_EVENT_FILES):04d}'
    )
    path = os.path.join(logdir, name)
    self._file = open(path, 'wb')
    self._records = RecordWriter(self._file)
    first = 1 if start_step is None else start_step + 1
    try:
      self._write(event_pb2.Event(file_version='brain.Event:2'))
      if start_step is not None:
        self._write(
            event_pb2.Event(
                step=first,
                session_log=event_pb2.SessionLog(
                    status=event_pb2.SessionLog.START
                ),
            )
        )
      for summary in run_start:
        self.write_summary(first, summary)
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
    self.write_summary(step, summary_pb2.Summary(value=values))

  def write_summary(self, step: int, summary: summary_pb2.Summary) -> None:
    self._write(event_pb2.Event(step=step, summary=summary))

  def _write(self, event) -> None:
    event.wall_time = time.time()
    self._records.write(event.SerializeToString())
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class MetricLogger:
  """Writes metric dicts to the console (`progress.ConsoleWriter`: a progress
  line per log step, a line per evaluation mode), TensorBoard
  (`TensorBoardWriter`; a per-block list becomes one scalar per block,
  `name/stage1/block03`, `RunInfo.block_tags`) and metrics.jsonl
  (everything, lists kept); and the run's `RunInfo` and class x block
  matrices to TensorBoard."""

  def __init__(
      self,
      workdir: str,
      run: RunInfo,
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
    self.workdir, self.block_tags = workdir, run.block_tags
    if not self.chief:
      return
    with self._write_errors('the metrics files'):
      self.tensorboard = TensorBoardWriter(
          workdir, start_step, run_summaries(run)
      )
      if start_step is not None:
        rundir.drop_metrics_after(workdir, start_step)
      self.jsonl = open(os.path.join(workdir, rundir.METRICS_FILE), 'a')

  def write(self, step: int, metrics: dict) -> None:
    """Raises WorkdirWriteError when a file cannot be written (a full disk)."""
    scalars, per_block = {}, {}
    for key, value in metrics.items():
      if isinstance(value, (list, tuple)):
        per_block.update(
            {f'{key}/{self.block_tags[i]}': v for i, v in enumerate(value)}
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

  def write_class_block_rates(
      self, step: int, matrices: dict[str, np.ndarray]
  ) -> None:
    """Writes each gate mode's class x block matrix as the image
    `eval/<mode>/class_block_rates` (`matrix_image`).

    Raises WorkdirWriteError when the file cannot be written (a full disk).
    """
    if not self.chief:
      return
    with self._write_errors(f'the class x block images of step {step}'):
      for mode, matrix in matrices.items():
        self.tensorboard.write_summary(
            step, matrix_image(f'eval/{mode}/class_block_rates', matrix)
        )

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
