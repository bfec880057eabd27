"""The analysis scripts of `experiments/` and the notebook, on tiny trained
digits runs (a gated one and its gates-off baseline, trained once per session).
"""

import csv
import os

from conftest import REPO, final_metrics, train_tiny_run
import numpy as np
import pytest

from adanet_jax.train import rundir
from experiments import (
    accuracy_vs_flops,
    block_rates,
    class_heatmap,
    extreme_images,
    fgsm,
    rate_curves,
)

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='session')
def runs(tmp_path_factory):
  """(gated workdir, gates-off workdir)."""
  base = tmp_path_factory.getbasetemp()
  return train_tiny_run(base, 'tiny_gated'), train_tiny_run(
      base, 'tiny_plain', gated=False
  )


def _run_script(module, out, name: str, workdirs, extra=()) -> list[dict]:
  """Runs `module.main` as from the command line; checks that `name`.png,
  .csv and .md were written and returns the CSV rows."""
  module.main(
      ['prog', f'--workdirs={",".join(workdirs)}', f'--out={out}', *extra]
  )
  with open(out / f'{name}.png', 'rb') as f:
    assert f.read(8) == PNG_MAGIC
  assert os.path.getsize(out / f'{name}.png') > 10_000
  assert open(out / f'{name}.md').read().startswith('| ')
  with open(out / f'{name}.csv') as f:
    return list(csv.DictReader(f))


@pytest.mark.timeout(300)
def test_block_rates(runs, tmp_path):
  rows = _run_script(block_rates, tmp_path, 'block_rates', runs)
  assert [(r['run'], r['block']) for r in rows] == [
      (run, str(b)) for run in ('tiny_gated', 'tiny_plain') for b in range(3)
  ]
  gated_rates = [float(r['rate']) for r in rows[:3]]
  assert gated_rates == final_metrics(runs[0])['eval/deterministic/gate_rates']
  assert [r['target'] for r in rows] == ['0.6'] * 3 + ['1.0'] * 3
  assert [r['downsampling'] for r in rows[:3]] == ['False', 'True', 'True']
  assert [r['always_runs'] for r in rows] == ['False'] * 3 + ['True'] * 3


@pytest.mark.timeout(300)
def test_rate_curves(runs, tmp_path):
  rows = _run_script(rate_curves, tmp_path, 'rate_curves_tiny_gated', runs[:1])
  logs = [
      r['train/gate_rates']
      for r in rundir.read_metrics(runs[0])
      if 'train/gate_rates' in r
  ]
  assert len(logs) == 6  # steps 4, 8, ..., 20 and the last, 22
  assert [float(r['rate_step4']) for r in rows] == logs[0]
  assert [float(r['rate_step22']) for r in rows] == logs[-1]
  _, epochs, rates = rate_curves.curves(runs[0])
  assert epochs[-1] == pytest.approx(1.0) and rates.shape == (6, 3)


@pytest.mark.timeout(300)
def test_accuracy_vs_flops(runs, tmp_path):
  rows = _run_script(accuracy_vs_flops, tmp_path, 'accuracy_vs_flops', runs)
  assert [(r['run'], r['gated']) for r in rows] == [
      ('tiny_gated', 'True'),
      ('tiny_plain', 'False'),
  ]
  for row, workdir in zip(rows, runs):
    final = final_metrics(workdir)
    assert float(row['accuracy']) == final['eval/deterministic/accuracy']
    assert (
        float(row['gflops_per_image'])
        == final['eval/deterministic/gflops_per_image']
    )
  assert rows[1]['target'] == ''  # no target for a gates-off run


@pytest.mark.timeout(300)
def test_class_heatmap_equals_trainer_csv(runs, tmp_path):
  rows = _run_script(
      class_heatmap, tmp_path, 'class_heatmap_tiny_gated', runs[:1]
  )
  ours = np.array(
      [[float(v) for k, v in r.items() if k != 'class'] for r in rows]
  )
  trainer_csv = os.path.join(
      runs[0], 'eval', 'class_block_rates_deterministic_step00000022.csv'
  )
  np.testing.assert_allclose(
      ours,
      np.loadtxt(trainer_csv, delimiter=',', skiprows=1)[:, 1:],
      atol=5e-7,
      rtol=0,
  )


@pytest.mark.timeout(300)
def test_extreme_images(runs, tmp_path):
  rows = _run_script(
      extreme_images,
      tmp_path,
      'extreme_images_tiny_gated',
      runs[:1],
      extra=['--num_images=4'],
  )
  assert [(r['group'], r['rank']) for r in rows] == [
      (g, str(i)) for g in ('fewest', 'most') for i in range(4)
  ]
  fewest = [int(r['blocks_executed']) for r in rows[:4]]
  most = [int(r['blocks_executed']) for r in rows[4:]]
  assert fewest == sorted(fewest) and most == sorted(most, reverse=True)
  assert max(fewest) <= min(most)


@pytest.mark.timeout(300)
def test_fgsm(runs, tmp_path):
  rows = _run_script(fgsm, tmp_path, 'fgsm', runs, extra=['--epsilons=0,0.1'])
  assert [(r['run'], r['defence'], float(r['epsilon'])) for r in rows] == [
      (run, d, e)
      for run in ('tiny_gated', 'tiny_plain')
      for d in ('none', 'jpeg')
      for e in (0.0, 0.1)
  ]
  for run_rows, workdir in ((rows[:4], runs[0]), (rows[4:], runs[1])):
    # epsilon 0 without defence is the clean evaluation.
    assert (
        float(run_rows[0]['accuracy'])
        == final_metrics(workdir)['eval/deterministic/accuracy']
    )
    assert float(run_rows[1]['accuracy']) < float(run_rows[0]['accuracy'])
  assert (
      float(rows[0]['flipped_gates']) == 0.0
      and float(rows[2]['flipped_gates']) == 0.0
  )
  assert {r['flipped_gates'] for r in rows[4:]} == {
      ''
  }  # a gates-off run has no gates


def test_fgsm_pixel_scale_round_trips():
  lo, hi = np.array([-1.0]), np.array([3.0])
  unit = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8, 1)
  images = unit * (hi - lo) + lo
  assert [v.tolist() for v in fgsm.pixel_range(images)] == [[-1.0], [3.0]]
  # Quality 95 on a smooth ramp: only JPEG's small rounding error is left.
  np.testing.assert_allclose(
      fgsm.jpeg(images, lo, hi, 95), images, atol=0.05 * 4
  )


def test_scripts_refuse_missing_workdirs(tmp_path):
  with pytest.raises(SystemExit, match='--workdirs is required'):
    block_rates.main(['prog', f'--out={tmp_path}'])


@pytest.mark.timeout(300)
def test_notebook_executes(runs, monkeypatch):
  # Imported here: only this test needs the Jupyter packages.
  import nbclient  # pylint: disable=import-outside-toplevel
  import nbformat  # pylint: disable=import-outside-toplevel

  monkeypatch.setenv('ADANET_WORKDIR', runs[0])
  notebook = nbformat.read(
      os.path.join(REPO, 'experiments', 'analysis.ipynb'), as_version=4
  )
  nbclient.NotebookClient(
      notebook,
      timeout=240,
      kernel_name='python3',
      resources={'metadata': {'path': os.path.join(REPO, 'experiments')}},
  ).execute()
  outputs = [
      o for c in notebook.cells if c.cell_type == 'code' for o in c.outputs
  ]
  assert not [o for o in outputs if o.output_type == 'error']
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert len(images) == 2  # the heatmap and the rate curves
  assert any('accuracy' in o.get('text', '') for o in outputs)


@pytest.mark.timeout(300)
def test_notebook_without_a_model_says_how_to_get_one(tmp_path, monkeypatch):
  import nbclient  # pylint: disable=import-outside-toplevel
  import nbformat  # pylint: disable=import-outside-toplevel

  monkeypatch.setenv('ADANET_WORKDIR', str(tmp_path / 'nothing'))
  notebook = nbformat.read(
      os.path.join(REPO, 'experiments', 'analysis.ipynb'), as_version=4
  )
  with pytest.raises(nbclient.exceptions.CellExecutionError) as error:
    nbclient.NotebookClient(
        notebook,
        timeout=240,
        kernel_name='python3',
        resources={'metadata': {'path': os.path.join(REPO, 'experiments')}},
    ).execute()
  assert 'FileNotFoundError' in str(error.value)
  assert (
      f"no trained model in {tmp_path / 'nothing'}: run `make train` in {REPO} (about a "
      'minute), or set ADANET_WORKDIR to a trained workdir'
  ) in str(error.value)
