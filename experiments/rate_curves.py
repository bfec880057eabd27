"""Execution rate of every block over training, from `metrics.jsonl`.

  python -m experiments.rate_curves --workdirs=DIR[,DIR...] [--out=experiments/results]

The paper's observation: gates start about 85% open; downsampling blocks
(the first block of every stage but the first) and the last block climb
toward always executed, the others fall toward the target. The rates are the
training-batch rates of the `train/gate_rates` log records (Gumbel-sampled
gates, averaged over the steps since the previous record), against epochs.

Writes per run `rate_curves_<run>.png` and `rate_curves_<run>.csv/.md`: per
block the first logged rate, the last logged rate and the target.
"""

import sys

import numpy as np

from adanet_jax.infer import inference
from adanet_jax.model import factory
from adanet_jax.train import rundir
from experiments import common

FLAGS = common.new_flags(predicts=False, gate_mode=False)


def curves(workdir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(steps, epochs, rates (log records, blocks)) of a run's training logs."""
  config = rundir.read_config(workdir)
  records = [r for r in rundir.read_metrics(workdir) if 'train/gate_rates' in r]
  if not records:
    raise ValueError(
        f'{workdir}/metrics.jsonl holds no train/gate_rates records'
    )
  steps = np.array([r['step'] for r in records])
  # progress = step / total steps, so this is exact whatever the batch size.
  epochs = (
      np.array([r['train/progress'] for r in records]) * config.train.num_epochs
  )
  return steps, epochs, np.array([r['train/gate_rates'] for r in records])


def highlighted_blocks(config) -> dict[int, str]:
  """Blocks drawn in colour, with their legend labels: downsampling and last."""
  labels = {
      i: f'block {i} (downsampling)'
      for i in inference.downsampling_blocks(config)
  }
  last = factory.num_blocks(config.model) - 1
  labels[last] = f'block {last} (last)'
  return labels


def plot_curves(workdir: str, ax=None):
  """Draws the curves of one run on `ax` (a new figure if None); returns the figure."""
  if ax is None:
    _, axes = common.new_figure(size=(7.5, 4.5))
    ax = axes[0, 0]
  config = rundir.read_config(workdir)
  _, epochs, rates = curves(workdir)
  colored = highlighted_blocks(config)
  others = [b for b in range(rates.shape[1]) if b not in colored]
  for block in colored:
    ax.plot(epochs, rates[:, block], lw=2.2, label=colored[block])
  for block in others:
    ax.plot(
        epochs,
        rates[:, block],
        lw=0.8,
        color='0.6',
        label='other blocks' if block == others[0] else None,
    )
  for t in sorted({t for t in factory.block_targets(config) if t < 1}):
    ax.axhline(t, ls='--', color='k', lw=1, label=f'target {t:g}')
  ax.set(
      title=f'{common.run_name(workdir)}: execution rate per block during training\n'
      f'({config.gates.train_mode} gates, training batches)',
      xlabel='epoch',
      ylabel='fraction of training images executing the block',
      ylim=(0, 1.05),
  )
  ax.legend(fontsize='small', loc='lower left')
  return ax.figure


def table_rows(workdir: str) -> list[dict]:
  """Per block: first and last logged rate, target, downsampling."""
  config = rundir.read_config(workdir)
  steps, _, rates = curves(workdir)
  targets, down = factory.block_targets(config), inference.downsampling_blocks(
      config
  )
  return [
      {
          'run': common.run_name(workdir),
          'block': b,
          'downsampling': b in down,
          'target': targets[b],
          f'rate_step{steps[0]}': float(rates[0, b]),
          f'rate_step{steps[-1]}': float(rates[-1, b]),
      }
      for b in range(rates.shape[1])
  ]


def run(workdirs: list[str], out: str) -> dict:
  """Writes a figure and a table per run; returns {run: {'png', 'csv', 'md'}}."""
  paths = {}
  for workdir in workdirs:
    name = common.run_name(workdir)
    paths[name] = common.write_outputs(
        table_rows(workdir), plot_curves(workdir), out, f'rate_curves_{name}'
    )
  return paths


def main(argv):
  fv = common.parse(FLAGS, argv, __doc__)
  print(run(fv.workdirs, fv.out))


if __name__ == '__main__':
  main(sys.argv)
