"""Summary of a sweep: one row per point, read from its workdir, a markdown and
CSV table, and accuracy against GFLOPs with the Pareto front marked.

Figures come from each workdir's files: `sweep_status.json` (overrides,
status, wall time), `config.json` (the evaluation modes), the last
evaluation record of `metrics.jsonl`, and the compile figures of its first
log record: the seconds to trace, lower and compile the train step, or to
load it from the persistent compilation cache (`compile_cached` = 1), at the
point's first launch.
"""

import csv
import json
import os

COLUMNS = ('point', 'overrides', 'status', 'eval_mode', 'accuracy', 'gate_rate',
           'gated_block_rate', 'macs_per_image', 'gflops_per_image', 'paper_gflops', 'wall_s',
           'compile_s', 'compile_cached')


def read_point(workdir: str) -> dict | None:
  """The summary row of one point's workdir, or None if it is not a sweep point."""
  status_path = os.path.join(workdir, 'sweep_status.json')
  if not os.path.exists(status_path):
    return None
  with open(status_path) as f:
    status = json.load(f)
  row = {'point': os.path.basename(workdir), 'status': status['status'],
         'overrides': ' '.join(f'{k}={v}' for k, v in status['overrides'].items()),
         'wall_s': round(status.get('wall_s', 0.0), 1)}
  mode = _eval_mode(workdir)
  row['eval_mode'] = mode
  last = _last_eval(os.path.join(workdir, 'metrics.jsonl'), mode)
  for key in ('accuracy', 'gate_rate', 'gated_block_rate', 'macs_per_image', 'gflops_per_image',
              'paper_gflops'):
    row[key] = last.get(f'eval/{mode}/{key}')
  compiled = _first_compile(os.path.join(workdir, 'metrics.jsonl'))
  row['compile_s'] = None if compiled is None else round(compiled['run/compile_s'], 2)
  row['compile_cached'] = None if compiled is None else int(compiled['run/compile_cached'])
  return row


def _eval_mode(workdir: str) -> str:
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      return json.load(f)['gates']['eval_modes'][0]
  except (OSError, KeyError, IndexError, ValueError):
    return 'deterministic'


def _last_eval(path: str, mode: str) -> dict:
  last = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        record = json.loads(line)
        if f'eval/{mode}/accuracy' in record:
          last = record
  return last


def _first_compile(path: str) -> dict | None:
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        record = json.loads(line)
        if 'run/compile_s' in record:
          return record
  return None


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
               '2 x MACs / 1e9; paper_gflops: gate-free baseline x mean fraction of blocks run; '
               'compile_s: trace + lower + compile of the train step at the first launch, '
               'compile_cached = 1 where it was loaded from the persistent compilation cache.')
  return '\n'.join(lines)


def _plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  done = [r for r in rows if r['accuracy'] is not None]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  plain = [r for r in done if 'model.gated=False' in r['overrides']]
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
