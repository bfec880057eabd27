"""Per-block execution rates of trained runs against their targets.

  python -m experiments.block_rates --workdirs=DIR[,DIR...] [--out=experiments/results]

Reads each run's last evaluation from `metrics.jsonl` (rates over the whole
test split, gate mode --gate_mode) and its per-block targets from
`config.json`. Writes `block_rates.png` (one panel per run: bars = rates,
red marks = targets, hatched bars = downsampling blocks, grey = blocks that
always run) and `block_rates.csv/.md` (one row per run and block).
"""

import sys

from adanet_jax.infer import inference
from adanet_jax.model import factory
from adanet_jax.train import rundir
from experiments import common

FLAGS = common.new_flags(predicts=False)


def table_rows(workdir: str, gate_mode: str) -> list[dict]:
  """One row per block: rate, target, whether it downsamples or always runs."""
  config = rundir.read_config(workdir)
  rates = common.final_eval(workdir, gate_mode)['gate_rates']
  targets = factory.block_targets(config)
  down, fixed = inference.downsampling_blocks(config), factory.fixed_blocks(
      config
  )
  return [
      {
          'run': common.run_name(workdir),
          'block': i,
          'downsampling': i in down,
          'always_runs': i in fixed or not config.model.gated,
          'target': targets[i],
          'rate': rates[i],
      }
      for i in range(len(rates))
  ]


def plot(runs: dict[str, list[dict]], gate_mode: str):
  """Bars of the rates with the targets marked, one panel per run."""
  fig, axes = common.new_figure(len(runs), 1, size=(8.0, 2.8), sharex=True)
  for ax, (name, rows) in zip(axes[:, 0], runs.items()):
    blocks = [r['block'] for r in rows]
    colors = ['0.7' if r['always_runs'] else 'tab:blue' for r in rows]
    bars = ax.bar(
        blocks, [r['rate'] for r in rows], color=colors, label='execution rate'
    )
    for bar, r in zip(bars, rows):
      bar.set_hatch('//' if r['downsampling'] else '')
    ax.scatter(
        blocks,
        [r['target'] for r in rows],
        marker='_',
        s=300,
        color='tab:red',
        zorder=3,
        label='target',
    )
    ax.set(
        title=f'{name}: per-block execution rate ({gate_mode} gates, test split)',
        ylabel='fraction of images',
        ylim=(0, 1.05),
    )
    ax.legend(loc='lower right', fontsize='small')
  axes[-1, 0].set_xlabel(
      'residual block (hatched: downsampling, grey: always runs)'
  )
  return fig


def run(
    workdirs: list[str], out: str, gate_mode: str = 'deterministic'
) -> dict:
  """Writes the figure and table; returns {'png', 'csv', 'md'} paths."""
  runs = {common.run_name(w): table_rows(w, gate_mode) for w in workdirs}
  return common.write_outputs(
      [r for rows in runs.values() for r in rows],
      plot(runs, gate_mode),
      out,
      'block_rates',
  )


def main(argv):
  fv = common.parse(FLAGS, argv, __doc__)
  print(run(fv.workdirs, fv.out, fv.gate_mode))


if __name__ == '__main__':
  main(sys.argv)
