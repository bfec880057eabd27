"""What a person sees of a run: one readable progress line per log step, one
line per gate mode per evaluation, and at the end where the outputs are."""

import math
import os
import sys

from adanet_jax.train import rundir


def format_duration(seconds: float) -> str:
  """`h:mm:ss` (hours unbounded), or `-:--:--` when unknown.

  Args:
    seconds: a duration; NaN or infinite when unknown.

  Returns:
    The duration rounded to whole seconds, e.g. `1:02:05`.
  """
  if not math.isfinite(seconds) or seconds < 0:
    return '-:--:--'
  total = int(round(seconds))
  return f'{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}'


def progress_bar(fraction: float, width: int = 20) -> str:
  """`[#######-------------]` for `fraction` in [0, 1]."""
  filled = int(round(width * min(max(fraction, 0.0), 1.0)))
  return '[' + '#' * filled + '-' * (width - filled) + ']'


def progress_line(
    step: int,
    num_steps: int,
    steps_per_epoch: int,
    scalars: dict,
    bar: bool = False,
) -> str:
  """One line of training progress.

  Args:
    step: completed steps.
    num_steps: steps of the whole run.
    steps_per_epoch: steps per epoch.
    scalars: the log record: `train/loss`, `train/gate_rate`,
      `train/images_per_s`, `train/eta_s` (missing ones are left out).
    bar: start with a progress bar (for a terminal).

  Returns:
    e.g. `step 44/440 | epoch 1.0/10.0 | 312 img/s | loss 1.9741 |
    exec rate 0.848 | eta 0:00:14`.
  """
  width = len(str(num_steps))
  parts = [
      f'step {step:>{width}d}/{num_steps}',
      f'epoch {step / steps_per_epoch:.1f}/{num_steps / steps_per_epoch:.1f}',
  ]
  if 'train/images_per_s' in scalars:
    parts.append(f'{scalars["train/images_per_s"]:,.0f} img/s')
  if 'train/loss' in scalars:
    parts.append(f'loss {scalars["train/loss"]:.4f}')
  if 'train/gate_rate' in scalars:
    parts.append(f'exec rate {scalars["train/gate_rate"]:.3f}')
  if 'train/eta_s' in scalars:
    parts.append(f'eta {format_duration(scalars["train/eta_s"])}')
  line = ' | '.join(parts)
  return f'{progress_bar(step / num_steps)} {line}' if bar else line


def eval_lines(step: int, scalars: dict) -> list[str]:
  """One line per gate mode of an evaluation record (`eval/<mode>/<key>`)."""
  modes = sorted(
      {
          k.split('/')[1]
          for k in scalars
          if k.startswith('eval/') and k.count('/') == 2
      }
  )
  lines = []
  for mode in modes:
    get = lambda key, mode=mode: scalars.get(f'eval/{mode}/{key}')  # noqa: E731
    parts = [f'eval at step {step} ({mode} gates)']
    if get('accuracy') is not None:
      parts.append(f'accuracy {100 * get("accuracy"):.2f}%')
    if get('loss') is not None:
      parts.append(f'loss {get("loss"):.4f}')
    if get('gate_rate') is not None:
      parts.append(f'exec rate {get("gate_rate"):.3f}')
    if get('gflops_per_image') is not None:
      parts.append(f'{1e3 * get("gflops_per_image"):.3f} MFLOPs/image')
    lines.append(' | '.join(parts))
  return lines


def outputs_lines(workdir: str, step: int, final: dict) -> list[str]:
  """Where a run's outputs are, ending with the command that shows its curves.

  Args:
    workdir: the run's directory.
    step: the step of the final evaluation and checkpoint.
    final: the final evaluation (`eval/<mode>/<key>`): its modes' per-class
      block rates are listed, where they were written.

  Returns:
    The lines, e.g. `outputs in /runs/w:`, `  metrics: /runs/w/metrics.jsonl`,
    ..., `  curves: tensorboard --logdir /runs/w`.
  """
  workdir = os.path.abspath(workdir)
  modes = sorted({k.split('/')[1] for k in final if k.count('/') == 2})
  rates = [rundir.class_block_rates_path(workdir, m, step) for m in modes]
  return [
      f'outputs in {workdir}:',
      f'  metrics: {os.path.join(workdir, rundir.METRICS_FILE)}',
      *(
          f'  per-class block rates: {path}'
          for path in rates
          if os.path.exists(path)
      ),
      f'  checkpoint: {rundir.checkpoint_dir(workdir)}/{step} '
      f"(adanet_jax.load('{workdir}'))",
      f'  curves: tensorboard --logdir {workdir}',
  ]


class ConsoleWriter:
  """Writes log records as readable lines on stdout: a progress line per
  training log step (with a bar when stdout is a terminal), a line per gate
  mode per evaluation, `key value` pairs for anything else."""

  def __init__(self, num_steps: int, steps_per_epoch: int, stream=None):
    self.num_steps, self.steps_per_epoch = num_steps, steps_per_epoch
    self.stream = stream or sys.stdout
    self.bar = bool(getattr(self.stream, 'isatty', lambda: False)())

  def write(self, step: int, scalars: dict) -> None:
    if 'train/loss' in scalars:
      lines = [
          progress_line(
              step, self.num_steps, self.steps_per_epoch, scalars, self.bar
          )
      ]
    else:
      lines = eval_lines(step, scalars) or [
          f'step {step}: '
          + ', '.join(f'{k} {v:.6g}' for k, v in sorted(scalars.items()))
      ]
    self.write_lines(lines)

  def write_lines(self, lines: list[str]) -> None:
    self.stream.write(''.join(line + '\n' for line in lines))
    self.stream.flush()
