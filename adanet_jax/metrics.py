"""Training metrics: summing on the device, summarising on the host, and
writing to CLU writers (TensorBoard + console) and `workdir/metrics.jsonl`.

Only process 0 writes; the others only log. On a resume, records past the
restored step (written before an interruption, redone now) are dropped from
metrics.jsonl, so it holds each step once however often the run resumed.
"""

import json
import os

from clu import metric_writers
import jax
import numpy as np

from adanet_jax import console, rundir

# Keys of the step metrics combined by minimum instead of sum.
MIN_KEYS = ('first_nonfinite_step',)


def accumulate(total: dict | None, new: dict) -> dict:
  """Adds one step's metric sums to the running sums (on the device)."""
  if total is None:
    return new
  return {k: (jax.numpy.minimum if k in MIN_KEYS else jax.numpy.add)(total[k], new[k])
          for k in total}


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


class MetricLogger:
  """Writes metric dicts to the console (`console.ConsoleWriter`: a progress
  line per log step, a line per evaluation mode), TensorBoard (CLU
  SummaryWriter; a per-block list becomes `name/block07` scalars) and
  metrics.jsonl (everything, lists kept)."""

  def __init__(self, workdir: str, num_steps: int = 0, steps_per_epoch: int = 1,
               start_step: int | None = None):
    """`start_step`: the step the run (re)starts from; records past it are
    dropped from metrics.jsonl (None: keep everything)."""
    self.chief = jax.process_index() == 0
    self.console = console.ConsoleWriter(max(num_steps, 1), steps_per_epoch)
    self.tensorboard = metric_writers.SummaryWriter(workdir) if self.chief else None
    if self.chief and start_step is not None:
      rundir.drop_metrics_after(workdir, start_step)
    self.jsonl = open(os.path.join(workdir, rundir.METRICS_FILE), 'a') if self.chief else None

  def write(self, step: int, metrics: dict) -> None:
    scalars, per_block = {}, {}
    for key, value in metrics.items():
      if isinstance(value, (list, tuple)):
        per_block.update({f'{key}/block{i:02d}': v for i, v in enumerate(value)})
      else:
        scalars[key] = value
    if not self.chief:
      return
    self.console.write(step, scalars)
    self.tensorboard.write_scalars(step, {**scalars, **per_block})
    self.jsonl.write(json.dumps({'step': step, **metrics}) + '\n')
    self.jsonl.flush()

  def close(self) -> None:
    if self.chief:
      self.tensorboard.close()
      self.jsonl.close()
