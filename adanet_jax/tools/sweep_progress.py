"""What a running sweep shows of its points: one line per running point.

Each line is read from the files the point's trainer writes anyway (its
metrics.jsonl and config.json, through `adanet_jax.train.rundir`), so it
needs nothing from the point but its workdir: the same for a child process
and for a SLURM job whose workdir is on a shared filesystem.
"""

import os
import time

from adanet_jax.errors import ConfigError
from adanet_jax.train import progress, rundir


def point_line(name: str, workdir: str) -> str:
  """The progress of one running point.

  Args:
    name: the point's name.
    workdir: its workdir.

  Returns:
    e.g. `running target-0.3_seed-0: step 40/110 | eval at step 22
    (deterministic gates): accuracy 91.20%, exec rate 0.612 | eta 0:00:14 |
    log <workdir>/log.txt`; the eta is the trainer's at its last log step.
    Before the first log step: `no step logged yet`; before the first
    evaluation: `no eval yet`.
  """
  records = rundir.read_metrics_so_far(workdir)
  train = next((r for r in reversed(records) if 'train/progress' in r), None)
  parts = []
  if train is None:
    parts.append('no step logged yet')
  else:
    # The trainer logs step / total, not the total itself.
    total = round(train['step'] / train['train/progress'])
    parts.append(f'step {train["step"]}/{total}')
  parts.append(_eval_text(workdir, records))
  if train is not None:
    parts.append(f'eta {progress.format_duration(train["train/eta_s"])}')
  parts.append(f'log {os.path.join(workdir, rundir.LOG_FILE)}')
  return f'running {name}: ' + ' | '.join(parts)


def _eval_text(workdir: str, records: list[dict]) -> str:
  """The last evaluation in the run's first gate mode (the mode the summary
  reports)."""
  try:
    mode = rundir.read_config(workdir).gates.eval_modes[0]
  except ConfigError:  # the trainer has not written its config yet
    return 'no eval yet'
  prefix = f'eval/{mode}/'
  last = next((r for r in reversed(records) if prefix + 'accuracy' in r), None)
  if last is None:
    return 'no eval yet'
  return (
      f'eval at step {last["step"]} ({mode} gates): accuracy '
      f'{100 * last[prefix + "accuracy"]:.2f}%, exec rate '
      f'{last[prefix + "gate_rate"]:.3f}'
  )


class ProgressReporter:
  """Prints `point_line` of every running point every `every_s` seconds
  (never with `every_s` 0), the first time `every_s` after it is made."""

  def __init__(self, every_s: float, clock=time.monotonic):
    self.every_s, self.clock = every_s, clock
    self.next = clock() + every_s

  def due(self) -> bool:
    """Whether it is time for the next report (and then counts it done)."""
    now = self.clock()
    if not self.every_s or now < self.next:
      return False
    self.next += self.every_s
    if self.next <= now:  # after a long pause: one report, not a burst
      self.next = now + self.every_s
    return True

  def report(self, running: dict[str, str]) -> None:
    """Prints the lines of `running` ({name: workdir}) if `due`."""
    if running and self.due():
      for name, workdir in running.items():
        print(point_line(name, workdir), flush=True)
