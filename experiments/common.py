"""Shared pieces of the analysis scripts: flags, reading a workdir's metrics,
figures and tables.

Every script has its own `absl.flags.FlagValues`, so several scripts can be
imported into one process (tests, notebooks) and each `main(argv)` parses its
whole argv from scratch: `main(['prog', '--workdirs=a,b', '--out=dir'])`.
Figures are built on `matplotlib.figure.Figure` (no pyplot state), so they
render headless with the Agg renderer.
"""

import csv
import os
import sys

from absl import flags
from matplotlib.figure import Figure

from adanet_jax.train import rundir

DEFAULT_OUT = 'experiments/results'


def new_flags(predicts: bool, gate_mode: bool = True) -> flags.FlagValues:
  """A script's own flags: --workdirs, --out, [--gate_mode], [--batch_size].

  Args:
    predicts: whether the script runs the model (adds --batch_size).
    gate_mode: whether the script shows one gate mode (adds --gate_mode).
  """
  fv = flags.FlagValues()
  flags.DEFINE_list(
      'workdirs',
      None,
      'Comma-separated workdirs of trained runs.',
      flag_values=fv,
  )
  flags.DEFINE_string(
      'out',
      DEFAULT_OUT,
      'Directory for the figures and tables.',
      flag_values=fv,
  )
  if gate_mode:
    flags.DEFINE_string(
        'gate_mode',
        'deterministic',
        'Gate mode: deterministic | sample | ' 'expected.',
        flag_values=fv,
    )
  if predicts:
    flags.DEFINE_integer(
        'batch_size',
        0,
        "Images per compiled call (0: the run's " 'eval.batch_size).',
        flag_values=fv,
    )
  return fv


def parse(fv: flags.FlagValues, argv: list[str], doc: str) -> flags.FlagValues:
  """Parses `argv` (program name first) into `fv` from its defaults.

  Exits with the script's documentation on --help or a usage error.
  """
  if '--help' in argv or '-h' in argv:
    print(doc + '\n' + fv.get_help())
    sys.exit(0)
  fv.unparse_flags()
  try:
    rest = fv(argv)
  except flags.Error as e:
    sys.exit(f'error: {e}')
  if len(rest) > 1:
    sys.exit(f'error: unexpected arguments {rest[1:]}')
  if not fv.workdirs:
    sys.exit(
        'error: --workdirs is required (one or more comma-separated workdirs)'
    )
  return fv


def run_name(workdir: str) -> str:
  """A run's short name in legends and file names: its workdir's basename."""
  return os.path.basename(os.path.normpath(workdir))


def final_eval(workdir: str, gate_mode: str) -> dict:
  """The last evaluation of `gate_mode` (`rundir.last_eval`), or an error
  naming the run and the mode."""
  last = rundir.last_eval(workdir, gate_mode)
  if last is None:
    raise ValueError(
        f'{workdir} has no evaluation in gate mode {gate_mode!r} '
        '(see gates.eval_modes of its config)'
    )
  return last


def new_figure(rows: int = 1, cols: int = 1, size=(6.4, 4.0), **kwargs):
  """(figure, axes) without pyplot: nothing global, renders headless."""
  fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout='constrained')
  return fig, fig.subplots(rows, cols, squeeze=False, **kwargs)


def save_figure(fig, out: str, name: str) -> str:
  """Writes `fig` to `out/name.png`; returns the path."""
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, name + '.png')
  fig.savefig(path, dpi=120)
  return path


def write_table(rows: list[dict], out: str, name: str) -> dict:
  """Writes `rows` (dicts with the same keys) as `name.csv` and `name.md`.

  The CSV keeps full precision; the markdown rounds floats to 4 significant digits.

  Returns:
    {'csv': path, 'md': path}.
  """
  os.makedirs(out, exist_ok=True)
  columns = list(rows[0])
  paths = {
      'csv': os.path.join(out, name + '.csv'),
      'md': os.path.join(out, name + '.md'),
  }
  with open(paths['csv'], 'w', newline='') as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  lines += [
      '| ' + ' | '.join(_cell(r[c]) for c in columns) + ' |' for r in rows
  ]
  with open(paths['md'], 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return paths


def write_outputs(rows: list[dict], fig, out: str, name: str) -> dict:
  """Writes the table and the figure of one analysis as `out/name.{csv,md,png}`.

  Returns:
    {'csv': path, 'md': path, 'png': path}.
  """
  paths = write_table(rows, out, name)
  paths['png'] = save_figure(fig, out, name)
  return paths


def _cell(value) -> str:
  if isinstance(value, float):
    return f'{value:.4g}'
  return '' if value is None else str(value)
