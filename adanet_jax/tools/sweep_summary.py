"""Summary of a sweep: one row per point, read from its workdir, a markdown and
CSV table, and accuracy against GFLOPs with the Pareto front marked.

Figures come from each workdir's files, read through `adanet_jax.rundir`:
the sweep status (overrides, status, wall time), the run's config (gated or
not, the evaluation mode) and its last evaluation.
"""

import csv
import os

from adanet_jax import rundir
from adanet_jax.errors import ConfigError

COLUMNS = ('point', 'overrides', 'status', 'gated', 'eval_mode', 'accuracy', 'gate_rate',
           'gated_block_rate', 'macs_per_image', 'gflops_per_image', 'paper_gflops', 'wall_s')
METRICS = ('accuracy', 'gate_rate', 'gated_block_rate', 'macs_per_image', 'gflops_per_image',
           'paper_gflops')


def read_point(workdir: str) -> dict | None:
  """The summary row of one point's workdir, or None if it is not a sweep point."""
  status = rundir.read_sweep_status(workdir)
  if not status:
    return None
  row = {'point': os.path.basename(workdir), 'status': status['status'],
         'overrides': ' '.join(f'{k}={v}' for k, v in status['overrides'].items()),
         'wall_s': round(status.get('wall_s', 0.0), 1), 'gated': None, 'eval_mode': None}
  try:
    config = rundir.read_config(workdir)
  except ConfigError:  # the point failed before the trainer wrote its config
    return {**row, **dict.fromkeys(METRICS)}
  row['gated'] = config.model.gated
  row['eval_mode'] = config.gates.eval_modes[0]
  last = rundir.last_eval(workdir, row['eval_mode']) or {}
  return {**row, **{key: last.get(key) for key in METRICS}}


def pareto_front(rows: list[dict]) -> list[dict]:
  """Rows not beaten by another row with at most the GFLOPs and more accuracy."""
  done = [r for r in rows if r['accuracy'] is not None]
  front = [r for r in done if not any(
      o['gflops_per_image'] <= r['gflops_per_image'] and o['accuracy'] >= r['accuracy'] and
      (o['gflops_per_image'] < r['gflops_per_image'] or o['accuracy'] > r['accuracy'])
      for o in done)]
  return sorted(front, key=lambda r: r['gflops_per_image'])


def write_summary(root: str) -> str:
  """Writes summary.md, summary.csv and accuracy_vs_gflops.png under `root`.

  Returns:
    The markdown table.
  """
  rows = [r for r in (read_point(os.path.join(root, d)) for d in sorted(os.listdir(root))
                      if os.path.isdir(os.path.join(root, d))) if r is not None]
  with open(os.path.join(root, 'summary.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  table = _markdown(rows)
  with open(os.path.join(root, 'summary.md'), 'w') as f:
    f.write(table + '\n')
  _plot(rows, os.path.join(root, 'accuracy_vs_gflops.png'))
  return table


def _fmt(value) -> str:
  if value is None:
    return '-'
  if isinstance(value, float):
    return f'{value:.4g}' if abs(value) < 1e4 else f'{value:,.0f}'
  return str(value)


def _markdown(rows: list[dict]) -> str:
  lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
  lines += ['| ' + ' | '.join(_fmt(r[c]) for c in COLUMNS) + ' |' for r in rows]
  lines.append('\nMACs: multiply-adds per image (exact, from the gate decisions); GFLOPs = '
               '2 x MACs / 1e9; paper_gflops: gate-free baseline x mean fraction of blocks run.')
  return '\n'.join(lines)


def _plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  done = [r for r in rows if r['accuracy'] is not None]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  plain = [r for r in done if r['gated'] is False]
  gated = [r for r in done if r not in plain]
  for group, marker, label in ((gated, 'o', 'gated'), (plain, 's', 'gates off')):
    if group:
      ax.scatter([1e3 * r['gflops_per_image'] for r in group],
                 [100 * r['accuracy'] for r in group], marker=marker, label=label, zorder=3)
  for r in done:
    ax.annotate(r['point'], (1e3 * r['gflops_per_image'], 100 * r['accuracy']), fontsize=7,
                xytext=(3, 3), textcoords='offset points')
  front = pareto_front(done)
  ax.plot([1e3 * r['gflops_per_image'] for r in front], [100 * r['accuracy'] for r in front],
          'r--', marker='*', markersize=14, label='Pareto front', zorder=4)
  ax.set_xlabel('compute per image (MFLOPs = 2 x MACs / 1e6)')
  ax.set_ylabel('evaluation accuracy (%)')
  ax.set_title('Accuracy against compute')
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
