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


def drop_records_after(path: str, step: int) -> None:
  """Rewrites the JSON-lines file `path` without the records past `step`
  (and without a line cut short by a kill), atomically; unchanged if none."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      record = json.loads(line)
    except ValueError:
      continue
    if line.endswith('\n') and record.get('step', 0) <= step:
      kept.append(line)
  if kept != lines:
    with open(path + '.tmp', 'w') as f:
      f.writelines(kept)
    os.replace(path + '.tmp', path)


class MetricLogger:
  """Writes metric dicts to the console (CLU LoggingWriter, scalars only),
  TensorBoard (CLU SummaryWriter; a per-block list becomes `name/block07`
  scalars) and metrics.jsonl (everything, lists kept)."""

  def __init__(self, workdir: str, start_step: int | None = None):
    """`start_step`: the step the run (re)starts from; records past it are
    dropped from metrics.jsonl (None: keep everything)."""
    self.chief = jax.process_index() == 0
    self.console = metric_writers.LoggingWriter()
    self.tensorboard = metric_writers.SummaryWriter(workdir) if self.chief else None
    path = os.path.join(workdir, 'metrics.jsonl')
    if self.chief and start_step is not None:
      drop_records_after(path, start_step)
    self.jsonl = open(path, 'a') if self.chief else None

  def write(self, step: int, metrics: dict) -> None:
    scalars, per_block = {}, {}
    for key, value in metrics.items():
      if isinstance(value, (list, tuple)):
        per_block.update({f'{key}/block{i:02d}': v for i, v in enumerate(value)})
      else:
        scalars[key] = value
    if not self.chief:
      return
    self.console.write_scalars(step, scalars)
    self.tensorboard.write_scalars(step, {**scalars, **per_block})
    self.jsonl.write(json.dumps({'step': step, **metrics}) + '\n')
    self.jsonl.flush()

  def close(self) -> None:
    if self.chief:
      self.tensorboard.close()
      self.jsonl.close()
