"""Test accuracy against compute over several runs (the paper's Fig. 3).

  python -m experiments.accuracy_vs_flops --workdirs=DIR,DIR,... [--out=experiments/results]

Reads each run's last evaluation from `metrics.jsonl` (gate mode
--gate_mode). Gated runs are circles, gates-off baselines (`model.gated`
false) squares. The x axis is the exact compute per image (2 x MACs, with
the blocks each image executed); the table also gives the paper's convention
(baseline GFLOPs x mean fraction of blocks executed).

Writes `accuracy_vs_flops.png` and `accuracy_vs_flops.csv/.md`.
"""

import sys

from adanet_jax.train import rundir
from experiments import common

FLAGS = common.new_flags(predicts=False)


def table_row(workdir: str, gate_mode: str) -> dict:
  """One run: model, target, accuracy and compute of its last evaluation."""
  config = rundir.read_config(workdir)
  final = common.final_eval(workdir, gate_mode)
  return {
      'run': common.run_name(workdir),
      'gated': config.model.gated,
      'depth': config.model.depth,
      'target': config.loss.target if config.model.gated else None,
      'step': final['step'],
      'accuracy': final['accuracy'],
      'error_percent': 100 * (1 - final['accuracy']),
      'gate_rate': final['gate_rate'],
      'gflops_per_image': final['gflops_per_image'],
      'paper_gflops': final['paper_gflops'],
  }


def plot(rows: list[dict], gate_mode: str):
  """Accuracy against GFLOPs, gated and gates-off runs marked apart."""
  fig, axes = common.new_figure(size=(6.4, 4.5))
  ax = axes[0, 0]
  for gated, marker, label in (
      (True, 'o', 'ConvNet-AIG (gated)'),
      (False, 's', 'ResNet (gates off)'),
  ):
    group = [r for r in rows if r['gated'] == gated]
    if not group:
      continue
    ax.scatter(
        [r['gflops_per_image'] for r in group],
        [100 * r['accuracy'] for r in group],
        marker=marker,
        s=60,
        label=label,
    )
    for r in group:
      ax.annotate(
          r['run'],
          (r['gflops_per_image'], 100 * r['accuracy']),
          fontsize='x-small',
          xytext=(4, 4),
          textcoords='offset points',
      )
  ax.set(
      title=f'Accuracy against compute ({gate_mode} gates, test split)',
      xlabel='compute per image (GFLOPs; 1 multiply-add = 2 FLOPs)',
      ylabel='test accuracy (%)',
  )
  ax.margins(0.2)  # room for the run names
  ax.legend()
  return fig


def run(
    workdirs: list[str], out: str, gate_mode: str = 'deterministic'
) -> dict:
  """Writes the figure and table; returns {'png', 'csv', 'md'} paths."""
  rows = [table_row(w, gate_mode) for w in workdirs]
  return common.write_outputs(
      rows, plot(rows, gate_mode), out, 'accuracy_vs_flops'
  )


def main(argv):
  fv = common.parse(FLAGS, argv, __doc__)
  print(run(fv.workdirs, fv.out, fv.gate_mode))


if __name__ == '__main__':
  main(sys.argv)
