"""The console: progress and evaluation lines (exact text), and what a digits
run, its rerun and `adanet_jax.load` print as a user sees it (no native
start-up notices, no orbax warnings, a start line, progress lines with an
h:mm:ss ETA, the final evaluation once and where the outputs are)."""

import glob
import io
import os
import re
import subprocess
import sys

import pytest

from adanet_jax.runtime import console
from adanet_jax.train import progress

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = (
    'oneDNN custom operations',
    'All log messages before absl::InitializeLog',
    'read_only=True',
)


def test_format_duration():
  assert [
      progress.format_duration(s)
      for s in (
          0,
          59.4,
          59.6,
          3599,
          3600,
          90061,
          float('nan'),
          float('inf'),
          -1,
      )
  ] == [
      '0:00:00',
      '0:00:59',
      '0:01:00',
      '0:59:59',
      '1:00:00',
      '25:01:01',
      '-:--:--',
      '-:--:--',
      '-:--:--',
  ]


SCALARS = {
    'train/loss': 1.97413,
    'train/gate_rate': 0.847775,
    'train/images_per_s': 1234.6,
    'train/eta_s': 3725.2,
    'train/accuracy': 0.5,
    'train/progress': 0.1,
}


def test_progress_line_plain_and_with_bar():
  assert progress.progress_line(44, 440, 11, SCALARS) == (
      'step  44/440 | epoch 4.0/40.0 | 1,235 img/s | loss 1.9741 | exec rate 0.848 | eta 1:02:05'
  )
  assert progress.progress_line(
      110, 440, 11, {'train/loss': 0.5}, bar=True
  ) == ('[#####---------------] step 110/440 | epoch 10.0/40.0 | loss 0.5000')


def test_eval_lines_one_per_mode():
  record = {
      'eval/deterministic/accuracy': 0.975,
      'eval/deterministic/loss': 0.1,
      'eval/deterministic/gate_rate': 0.6125,
      'eval/deterministic/gflops_per_image': 0.0012,
      'eval/sample/accuracy': 0.5,
  }
  assert progress.eval_lines(440, record) == [
      'eval at step 440 (deterministic gates) | accuracy 97.50% | loss 0.1000 | exec rate 0.613 | '
      '1.200 MFLOPs/image',
      'eval at step 440 (sample gates) | accuracy 50.00%',
  ]


def test_console_writer_bar_only_on_a_terminal():
  class Terminal(io.StringIO):

    def isatty(self):
      return True

  plain, terminal = io.StringIO(), Terminal()
  for stream in (plain, terminal):
    progress.ConsoleWriter(20, 10, stream).write(10, {'train/loss': 1.0})
  assert plain.getvalue() == 'step 10/20 | epoch 1.0/2.0 | loss 1.0000\n'
  assert (
      terminal.getvalue()
      == '[##########----------] step 10/20 | epoch 1.0/2.0 | loss 1.0000\n'
  )


def test_quiet_native_logs_keeps_what_the_user_set():
  environ = {'TF_CPP_MIN_LOG_LEVEL': '0'}
  console.quiet_native_logs(environ)
  assert environ == {
      'TF_CPP_MIN_LOG_LEVEL': '0',
      'TF_ENABLE_ONEDNN_OPTS': '0',
      'GRPC_VERBOSITY': 'ERROR',
  }


def _user_env():
  """The environment of a user's shell: none of the quieting variables the
  test set-up itself sets."""
  env = dict(os.environ)
  for key in ('XLA_FLAGS', *console.NATIVE_LOG_DEFAULTS):
    env.pop(key, None)
  return env


def _main(workdir):
  """`python -m adanet_jax.main` of 9 digits steps, two of them profiled."""
  return subprocess.run(
      [
          sys.executable,
          '-m',
          'adanet_jax.main',
          '--config=configs/digits.py:depth=8',
          f'--workdir={workdir}',
          '--config.train.num_epochs=0.2',
          '--config.train.batch_size=32',
          '--config.train.log_every_steps=3',
          '--config.eval.batch_size=120',
          '--config.train.profile_steps=2',
      ],
      cwd=REPO,
      env=_user_env(),
      capture_output=True,
      text=True,
      timeout=240,
  )


def _logged(text: str) -> list[str]:
  """The messages of the INFO lines of our modules but main.py's."""
  return re.findall(
      r'^I\d{4} [\d:.]+ +\d+ (?!main\.py)[\w.]+:\d+\] (.*)$', text, re.M
  )


@pytest.mark.timeout(300)
def test_training_and_load_print_no_noise(tmp_path):
  workdir = tmp_path / 'w'
  out = _main(workdir)
  text = out.stdout + out.stderr
  assert out.returncode == 0, text[-3000:]
  for noise in NOISE:
    assert noise not in text
  progress = [l for l in out.stdout.splitlines() if l.startswith('step ')]
  assert len(progress) == 3  # steps 3, 6 and the last (9 of 9)
  assert all(re.search(r'\| eta \d+:\d\d:\d\d$', l) for l in progress), progress
  assert progress[-1].startswith('step 9/9 | epoch 0.2/0.2 | ')
  assert 'train/loss=' not in text  # the old key=value dump
  # Log lines only from our own modules: the libraries' INFO lines are quieted.
  sources = set(
      re.findall(r'^[IWE]\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\]', text, re.M)
  )
  assert sources == {
      'main.py',
      'trainer.py',
      'compilation.py',
      'profiling.py',
  }, text[-3000:]
  profile = f'{workdir}/profile'
  logged = _logged(out.stderr)
  assert re.fullmatch(
      r'(compiled|loaded) the train step in \d+\.\d s', logged[2]
  )
  assert logged[:2] + logged[3:] == [
      'starting fresh: step 0 of 9',
      'compiling the train step...',
      f'profiling steps 2 to 3 into {profile}',
      f'profile written to {profile} (tensorboard --logdir {profile}, or the '
      '*.trace.json.gz in https://ui.perfetto.dev)',
  ]
  assert len(glob.glob(f'{profile}/plugins/profile/*/*.xplane.pb')) == 1
  # The end: the final evaluation once, then where the outputs are.
  end = out.stdout.splitlines()[-6:]
  assert end[0].startswith('eval at step 9 (deterministic gates) | accuracy ')
  assert end[1:] == [
      f'outputs in {workdir}:',
      f'  metrics: {workdir}/metrics.jsonl',
      f'  per-class block rates: {workdir}/eval/'
      'class_block_rates_deterministic_step00000009.csv',
      f"  checkpoint: {workdir}/checkpoints/9 (adanet_jax.load('{workdir}'))",
      f'  curves: tensorboard --logdir {workdir}',
  ]
  assert out.stdout.count('eval at step') == 1
  assert 'eval/deterministic' not in out.stdout
  # Run again, it is done: it says so, compiles nothing and shows the end.
  rerun = _main(workdir)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert _logged(rerun.stderr) == [
      f'already finished at step 9 (checkpoint {workdir}/checkpoints/9); '
      'nothing to train, the final evaluation is the stored one'
  ]
  assert rerun.stdout.splitlines() == end

  load = subprocess.run(
      [
          sys.executable,
          '-c',
          'import sys, adanet_jax; m = adanet_jax.load(sys.argv[1]); '
          'print(m.predict(m.eval_split()[0][:4]).logits.shape)',
          str(workdir),
      ],
      cwd=REPO,
      env=_user_env(),
      capture_output=True,
      text=True,
      timeout=240,
  )
  text = load.stdout + load.stderr
  assert load.returncode == 0, text[-3000:]
  assert load.stdout.strip().splitlines()[-1] == '(4, 10)'
  for noise in NOISE:
    assert noise not in text, text[-3000:]
