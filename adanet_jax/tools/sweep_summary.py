"""Summary of a sweep: one row per point, read from its workdir, a markdown and
CSV table, and accuracy against GFLOPs with the Pareto front marked.

Figures come from each workdir's files, read through `adanet_jax.train.rundir`:
the sweep status (overrides, status, wall time), the run's config (gated or
not, the evaluation mode), its last evaluation, and the compile figures of
its first launch: the seconds to trace, lower and compile the train step, or
to load it from the persistent compilation cache (`compile_cached` = 1).
"""

import csv
import os

from adanet_jax.errors import ConfigError
from adanet_jax.train import rundir

OUTPUT_FILES = ('summary.md', 'summary.csv', 'accuracy_vs_gflops.png')
COLUMNS = (
    'point',
    'overrides',
    'status',
    'gated',
    'eval_mode',
    'accuracy',
    'gate_rate',
    'gated_block_rate',
    'macs_per_image',
    'gflops_per_image',
    'paper_gflops',
    'wall_s',
    'compile_s',
    'compile_cached',
)
METRICS = (
    'accuracy',
    'gate_rate',
    'gated_block_rate',
    'macs_per_image',
    'gflops_per_image',
    'paper_gflops',
)


def read_point(workdir: str) -> dict | None:
  """The summary row of one point's workdir, or None if it is not a sweep point."""
  status = rundir.read_sweep_status(workdir)
  if not status:
    return None
  row = {
      'point': os.path.basename(workdir),
      'status': status['status'],
      'overrides': ' '.join(f'{k}={v}' for k, v in status['overrides'].items()),
      'wall_s': round(status.get('wall_s', 0.0), 1),
      'gated': None,
      'eval_mode': None,
  }
  compiled = rundir.first_compile(workdir)
  row['compile_s'] = (
      None if compiled is None else round(compiled['run/compile_s'], 2)
  )
  row['compile_cached'] = (
      None if compiled is None else int(compiled['run/compile_cached'])
  )
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
  front = [
      r
      for r in done
      if not any(
          o['gflops_per_image'] <= r['gflops_per_image']
          and o['accuracy'] >= r['accuracy']
          and (
              o['gflops_per_image'] < r['gflops_per_image']
              or o['accuracy'] > r['accuracy']
          )
          for o in done
      )
  ]
  return sorted(front, key=lambda r: r['gflops_per_image'])


def write_summary(root: str) -> str:
  """Writes summary.md, summary.csv and accuracy_vs_gflops.png under `root`.

  Returns:
    The markdown table.
  """
  rows = [
      r
      for r in (
          read_point(os.path.join(root, d))
          for d in sorted(os.listdir(root))
          if os.path.isdir(os.path.join(root, d))
      )
      if r is not None
  ]
  with _written(os.path.join(root, 'summary.csv')) as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)
  table = _markdown(rows)
  with _written(os.path.join(root, 'summary.md')) as f:
    f.write(table + '\n')
  with _written(os.path.join(root, 'accuracy_vs_gflops.png'), 'wb') as f:
    plot_pareto(rows, f, _sweep_title(root))
  return table


def _written(path: str, mode: str = 'w'):
  """`path` written atomically; a failed write (a full disk) is one
  WorkdirWriteError line naming it."""
  return rundir.reported_file(
      path, 'the summary is incomplete; the points are as they were', mode
  )


def _sweep_title(root: str) -> str:
  """`<config> --sweep=<name>` from the root's sweep.json, else the root's name."""
  manifest = rundir.read_json(
      os.path.join(root, rundir.SWEEP_MANIFEST_FILE), {}
  )
  if 'config' in manifest and 'sweep' in manifest:
    return f'{os.path.basename(manifest["config"])} --sweep={manifest["sweep"]}'
  return os.path.basename(os.path.normpath(root))


def _fmt(value) -> str:
  if value is None:
    return '-'
  if isinstance(value, float):
    return f'{value:.4g}' if abs(value) < 1e4 else f'{value:,.0f}'
  return str(value)


def _markdown(rows: list[dict]) -> str:
  lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
  lines += ['| ' + ' | '.join(_fmt(r[c]) for c in COLUMNS) + ' |' for r in rows]
  lines.append(
      '\nMACs: multiply-adds per image (exact, from the gate decisions); GFLOPs = '
      '2 x MACs / 1e9; paper_gflops: gate-free baseline x mean fraction of blocks run; '
      'compile_s: trace + lower + compile of the train step at the first launch, '
      'compile_cached = 1 where it was loaded from the persistent compilation cache.'
  )
  return '\n'.join(lines)


def plot_pareto(rows: list[dict], path, title: str) -> list[tuple]:
  """Draws accuracy against compute, the Pareto front, a label per point.

  Args:
    rows: summary rows (`read_point`); `gated` picks the marker.
    path: the PNG to write (a path or a binary file).
    title: names the sweep.

  Returns:
    The labels' boxes (x0, y0, x1, y1) in pixels, in the order of the rows
    with an accuracy, for tests.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  done = [r for r in rows if r['accuracy'] is not None]
  fig, ax = plt.subplots(figsize=(10, 5.5))
  xy = {
      r['point']: (1e3 * r['gflops_per_image'], 100 * r['accuracy'])
      for r in done
  }
  shifts = coincident_shifts(
      [xy[r['point']] for r in done], _spans(list(xy.values()))
  )
  styles = {
      True: dict(marker='o', color='tab:blue', label='gated'),
      False: dict(
          marker='s', color='tab:orange', label='gates off (model.gated=false)'
      ),
  }
  labelled = set()
  for r, (dx, dy) in zip(done, shifts):
    style = dict(styles[r['gated']])
    if r['gated'] in labelled:
      style.pop('label')
    labelled.add(r['gated'])
    # Coinciding points are drawn a few screen points apart, so each shows.
    ax.scatter(
        *xy[r['point']],
        s=36,
        zorder=3,
        transform=_offset(ax, fig, dx, dy),
        edgecolors='black',
        linewidths=0.5,
        **style,
    )
  front = pareto_front(done)
  ax.plot(
      [xy[r['point']][0] for r in front],
      [xy[r['point']][1] for r in front],
      'r--',
      marker='*',
      markersize=13,
      markerfacecolor='none',
      label='Pareto front',
      zorder=2,
  )
  _margins(ax, list(xy.values()))
  ax.set_xlabel('compute per image (MFLOPs = 2 x MACs / 1e6)')
  ax.set_ylabel('evaluation accuracy (%)')
  modes = sorted({r['eval_mode'] for r in done}) or ['deterministic']
  ax.set_title(
      f'Accuracy against compute: {title}\n(evaluated with {", ".join(modes)} gates)',
      fontsize=10,
  )
  # Outside the axes, so that it hides no point or label.
  ax.legend(
      loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0
  )
  ax.grid(alpha=0.3)
  fig.tight_layout()
  # Last: the labels are placed in the final pixel layout.
  boxes = _place_labels(
      fig, ax, [(r['point'], xy[r['point']], s) for r, s in zip(done, shifts)]
  )
  fig.savefig(path, dpi=120, format='png')
  plt.close(fig)
  return boxes


def _spans(points: list[tuple]) -> tuple[float, float]:
  xs, ys = [p[0] for p in points] or [0.0], [p[1] for p in points] or [0.0]
  return (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0


def _margins(ax, points: list[tuple]) -> None:
  """Room around the points for their labels."""
  if not points:
    return
  (w, h), xs, ys = (
      _spans(points),
      [p[0] for p in points],
      [p[1] for p in points],
  )
  ax.set_xlim(min(xs) - 0.25 * w, max(xs) + 0.25 * w)
  ax.set_ylim(min(ys) - 0.3 * h, max(ys) + 0.3 * h)


def coincident_shifts(
    points: list[tuple],
    spans: tuple[float, float],
    tolerance: float = 0.01,
    step: float = 7.0,
) -> list[tuple[float, float]]:
  """Screen offsets (in points) that spread points which coincide.

  Args:
    points: (x, y) data coordinates.
    spans: the data ranges of x and y; points closer than `tolerance` of them
      in both coordinates coincide (with the first point of their group).
    tolerance: fraction of the spans.
    step: distance in points between two coinciding markers.

  Returns:
    One (dx, dy) per point: (0, 0) alone; in a group, left, right, up, down,
    ... of the common place, so the first two sit side by side.
  """
  pattern = [
      (-1, 0),
      (1, 0),
      (0, 1),
      (0, -1),
      (-1, 1),
      (1, -1),
      (1, 1),
      (-1, -1),
  ]
  groups = []  # [anchor, member indices]
  for i, (x, y) in enumerate(points):
    for anchor, members in groups:
      if (
          abs(anchor[0] - x) <= tolerance * spans[0]
          and abs(anchor[1] - y) <= tolerance * spans[1]
      ):
        members.append(i)
        break
    else:
      groups.append(((x, y), [i]))
  shifts = [(0.0, 0.0)] * len(points)
  for _, members in groups:
    if len(members) > 1:
      for k, i in enumerate(members):
        ring, (px, py) = k // len(pattern) + 1, pattern[k % len(pattern)]
        shifts[i] = (step / 2 * ring * px, step / 2 * ring * py)
  return shifts


def _place_labels(fig, ax, labels: list[tuple]) -> list[tuple]:
  """Writes each label next to its point where it overlaps no other label or
  marker: candidate positions around the point at growing distances, the
  first free one wins (greedy), with a thin line back to the point."""
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  to_px = ax.transData.transform
  scale = fig.dpi / 72.0
  markers = []
  for _, xy, (dx, dy) in labels:
    px, py = to_px(xy)
    px, py = px + dx * scale, py + dy * scale
    markers.append(
        (px - 5 * scale, py - 5 * scale, px + 5 * scale, py + 5 * scale)
    )
  axes_box = ax.get_window_extent(renderer)
  placed = list(markers)
  for text, xy, (dx, dy) in labels:
    probe = ax.text(0, 0, text, fontsize=7)
    box = probe.get_window_extent(renderer)
    probe.remove()
    w, h = box.width, box.height
    px, py = to_px(xy)
    px, py = px + dx * scale, py + dy * scale
    best = None
    for radius in (8, 16, 26, 38, 52, 70, 90):
      r = radius * scale
      around = [
          (r, r),
          (r, -r),
          (-r, r),
          (-r, -r),
          (r, 0),
          (-r, 0),
          (0, r),
          (0, -r),
      ]
      # A marker moved aside from a coinciding one gets its label on its side.
      around.sort(key=lambda c, dx=dx: dx < 0 and c[0] >= 0)
      for cx, cy in around:
        x0 = px + cx if cx > 0 else (px + cx - w if cx < 0 else px - w / 2)
        y0 = py + cy if cy > 0 else (py + cy - h if cy < 0 else py - h / 2)
        cand = (x0, y0, x0 + w, y0 + h)
        inside = (
            cand[0] >= axes_box.x0
            and cand[2] <= axes_box.x1
            and cand[1] >= axes_box.y0
            and cand[3] <= axes_box.y1
        )
        if inside and not any(_overlap(cand, other) for other in placed):
          best = cand
          break
      if best:
        break
    if best is None:  # crowded: the least-covered spot right of the point
      best = (px + 8 * scale, py, px + 8 * scale + w, py + h)
    placed.append(best)
    anchor = ax.transData.inverted().transform((best[0], best[1]))
    ax.annotate(
        text,
        xy=xy,
        xytext=anchor,
        textcoords='data',
        fontsize=7,
        ha='left',
        va='bottom',
        xycoords=_offset(ax, fig, dx, dy),
        arrowprops=dict(
            arrowstyle='-', lw=0.5, color='gray', shrinkA=0, shrinkB=3
        ),
        bbox=dict(boxstyle='square,pad=0.1', fc='white', ec='none', alpha=0.8),
        zorder=5,
    )
  return placed[len(markers) :]


def _offset(ax, fig, dx: float, dy: float):
  """Data coordinates shifted by (dx, dy) points on the screen."""
  import matplotlib.transforms  # pylint: disable=import-outside-toplevel

  return matplotlib.transforms.offset_copy(
      ax.transData, fig, x=dx, y=dy, units='points'
  )


def _overlap(a: tuple, b: tuple) -> bool:
  return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
