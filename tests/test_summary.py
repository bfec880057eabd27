"""The summary command prints the reference numbers."""

import json
import subprocess
import sys

from conftest import REPO
import pytest

from adanet_jax.tools import summary


def _summary(config_arg):
  out = subprocess.run(
      [
          sys.executable,
          '-m',
          'adanet_jax.tools.summary',
          f'--config={config_arg}',
          '--json',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
      check=True,
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    'config_arg,params,gate_params,gmacs,gated',
    [
        ('configs/cifar10.py', 1_766_630, 35_916, 0.2532, 54),
        ('configs/imagenet.py:resnet50', 25_768_264, 211_232, 4.0894, 10),
        ('configs/imagenet.py:resnet101', 45_040_314, 491_154, 7.8019, 25),
    ],
)
def test_summary_json(config_arg, params, gate_params, gmacs, gated):
  s = _summary(config_arg)
  assert (s['params'], s['gate_params'], s['gated_blocks']) == (
      params,
      gate_params,
      gated,
  )
  assert abs(s['macs'] / 1e9 / gmacs - 1) < 1e-3
  assert s['gflops'] == pytest.approx(2 * s['macs'] / 1e9)
  assert len(s['per_block']) == s['blocks']
  assert sum(b['params'] for b in s['per_block']) < s['params']


def test_summary_table_and_bad_config():
  out = subprocess.run(
      [
          sys.executable,
          '-m',
          'adanet_jax.tools.summary',
          '--config=configs/cifar10.py:depth=20',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
      check=True,
  ).stdout
  assert (
      'stage3_block2' in out
      and '40,818,080 MACs' in out
      and '277,820 params' in out
  )
  bad = subprocess.run(
      [
          sys.executable,
          '-m',
          'adanet_jax.tools.summary',
          '--config=configs/cifar10.py:depth=21',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert bad.returncode != 0
  assert (
      'model.depth=21 is not allowed for cifar_resnet: depth must be 6n+2'
      in bad.stderr
  )
  assert 'Traceback' not in bad.stderr


def test_rows_come_in_execution_order_with_fixed_block_on_its_row(load_config):
  config = load_config('cifar10.py')  # ResNet-110: 54 blocks, 18 per stage
  targets = [0.7] * 54
  targets[10] = 1.0  # stage 1, block 10
  config.loss.targets = tuple(targets)
  s = summary.summarize(config)
  names = [b['name'] for b in s['per_block']]
  assert names == [
      f'stage{stage}_block{i}' for stage in (1, 2, 3) for i in range(18)
  ]
  assert [b['index'] for b in s['per_block']] == list(range(54))
  assert [b['name'] for b in s['per_block'] if b['status'] == 'fixed'] == [
      'stage1_block10'
  ]
  assert s['fixed_blocks'] == [10]
  # The projection shortcut (and its MACs) is on the first block of stages 2 and 3.
  assert [b['name'] for b in s['per_block'] if b['shortcut_macs']] == [
      'stage2_block0',
      'stage3_block0',
  ]


def test_summary_per_block_target(load_config):
  s = summary.summarize(load_config('imagenet.py', 'resnet50,t=0.6'))
  assert [b['target'] for b in s['per_block']] == [
      1.0,
      1.0,
      0.8,
      1.0,
      0.6,
      0.6,
      0.6,
      1.0,
      0.6,
      0.6,
      0.6,
      0.6,
      0.6,
      1.0,
      0.7,
      1.0,
  ]
  plain = summary.summarize(load_config('cifar10.py', 'depth=20,gated=false'))
  assert {b['target'] for b in plain['per_block']} == {1.0}
