"""Tests of `adanet_jax.train.evaluation`: the summary of the summed eval outputs,
MACs from the branches that ran (all of them in `expected` mode), and the
per-class x per-block matrix; the evaluator returns them and writes nothing."""

import os

from conftest import final_metrics, restore_state
import jax
import numpy as np
import pytest

from adanet_jax.data import input_pipeline
from adanet_jax.model import accounting
from adanet_jax.tools import summary
from adanet_jax.train import evaluation, rundir, trainer

COSTS = accounting.CostTable(
    blocks=('b0', 'b1', 'b2'),
    outside=100,
    branch=(10, 20, 40),
    shortcut=(0, 5, 0),
    gate=(1, 1, 0),
    gate_pool_adds=(4, 4, 4),
)


def test_summary_by_hand():
  sums = {
      'count': 4.0,
      'correct': 3.0,
      'ce': 2.0,
      'gates': np.array([2.0, 1.0, 4.0]),
      'executed': np.array([2.0, 1.0, 4.0]),
      'class_count': np.array([1.0, 3.0]),
      'class_gates': np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 3.0]]),
  }
  s = evaluation.summarize(sums, COSTS, fixed_blocks=(2,), gated=True)
  assert (s['count'], s['accuracy'], s['loss']) == (4, 0.75, 0.5)
  assert s['gate_rates'] == [0.5, 0.25, 1.0]
  assert s['gate_rate'] == pytest.approx(1.75 / 3)
  # blocks 0 and 1; block 2 is fixed
  assert s['gated_block_rate'] == pytest.approx(0.375)
  # always = 100 + 5 + 2 = 107; branches 0.5 x 10 + 0.25 x 20 + 1 x 40 = 50.
  assert s['macs_per_image'] == 157.0
  assert s['gflops_per_image'] == 2 * 157.0 / 1e9
  # baseline x rate
  assert s['paper_gflops'] == pytest.approx(2 * (177 - 2) * (1.75 / 3) / 1e9)
  np.testing.assert_allclose(
      evaluation.class_block_rates(sums), [[1.0, 0.0, 1.0], [1 / 3, 1 / 3, 1.0]]
  )


def test_expected_mode_costs_every_branch():
  # Probabilities as gate values, every branch computed.
  sums = {
      'count': 2.0,
      'correct': 2.0,
      'ce': 0.0,
      'gates': np.array([1.2, 0.4, 2.0]),
      'executed': np.array([2.0, 2.0, 2.0]),
  }
  s = evaluation.summarize(sums, COSTS, fixed_blocks=(2,), gated=True)
  assert s['gate_rates'] == [0.6, 0.2, 1.0]
  assert s['macs_per_image'] == COSTS.dense == 177


@pytest.mark.timeout(300)
def test_trainer_macs_equal_predict_and_summary(gated_run, loaded):
  final = final_metrics(gated_run)
  dense = summary.summarize(loaded.config)['macs']
  assert dense == loaded.costs.dense
  assert final['eval/expected/macs_per_image'] == dense
  images, _ = loaded.eval_split()
  expected = loaded.predict(images, gate_mode='expected')
  assert np.all(expected.macs == dense)
  deterministic = loaded.predict(images)
  assert final['eval/deterministic/macs_per_image'] == pytest.approx(
      deterministic.macs.mean(), rel=1e-12
  )


@pytest.mark.timeout(300)
def test_evaluator_returns_what_the_trainer_wrote_and_writes_nothing(gated_run):
  config = rundir.read_config(gated_run)
  dataset = input_pipeline.create_dataset(config)
  setup = trainer.setup(config, dataset)  # all 8 devices, as the run
  step, state = restore_state(config, gated_run)
  assert step == 22
  before = sorted(os.listdir(os.path.join(gated_run, rundir.EVAL_DIR)))
  results, matrices = setup.evaluator(
      jax.device_put(state, setup.placement.replicated), dataset
  )
  assert sorted(os.listdir(os.path.join(gated_run, rundir.EVAL_DIR))) == before
  final = final_metrics(gated_run)
  assert results == {k: v for k, v in final.items() if k.startswith('eval/')}
  assert sorted(matrices) == ['deterministic', 'expected']
  for mode, matrix in matrices.items():
    written = np.loadtxt(
        rundir.class_block_rates_path(gated_run, mode, 22),
        delimiter=',',
        skiprows=1,
    )
    np.testing.assert_array_equal(written[:, 0], np.arange(10))
    # 6 decimals
    np.testing.assert_allclose(written[:, 1:], matrix, rtol=0, atol=5e-7)


@pytest.mark.timeout(300)
def test_sample_mode_noise_depends_on_seed_and_step_only(gated_run):
  # Evaluating one checkpoint twice in mode 'sample' gives the same figures;
  # another step or seed draws other noise.
  config = rundir.read_config(gated_run)
  config.gates.eval_modes = ('sample',)
  dataset = input_pipeline.create_dataset(config)
  setup = trainer.setup(config, dataset)
  _, state = restore_state(config, gated_run)
  state = jax.device_put(state, setup.placement.replicated)
  first, _ = setup.evaluator(state, dataset)
  again, _ = setup.evaluator(state, dataset)
  assert first == again
  assert first['eval/sample/count'] == 360
  later, _ = setup.evaluator(state.replace(step=state.step + 1), dataset)
  config.seed = 1
  reseeded, _ = trainer.setup(config, dataset).evaluator(state, dataset)
  rates = [r['eval/sample/gate_rates'] for r in (first, later, reseeded)]
  assert rates[0] != rates[1] and rates[0] != rates[2]
