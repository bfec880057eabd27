"""Tests of `adanet_jax.infer.inference`: a checkpoint trained on 8 devices loads on
one, and `predict` reproduces the trainer's evaluation exactly."""

import dataclasses
import os
import subprocess
import sys

from conftest import REPO, final_metrics
import jax
import numpy as np
import pytest

import adanet_jax
from adanet_jax.errors import ConfigError
from adanet_jax.infer import inference


def test_checkpoint_of_eight_devices_loads_on_one(gated_run, loaded):
  assert jax.device_count() == 8  # the trainer's mesh had 8 devices
  assert loaded.step == 22
  assert loaded.config.model.depth == 8 and loaded.config.train.batch_size == 64
  leaves = jax.tree.leaves((loaded.params, loaded.batch_stats))
  assert {frozenset(x.devices()) for x in leaves} == {
      frozenset({jax.devices()[0]})
  }
  # The checkpoints directory and the latest step directory are the same checkpoint.
  for path in ('checkpoints', 'checkpoints/22'):
    other = inference.load(os.path.join(gated_run, path))
    assert other.step == 22
    for a, b in zip(leaves, jax.tree.leaves((other.params, other.batch_stats))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  older = inference.load(os.path.join(gated_run, 'checkpoints', '20'))
  assert older.step == 20
  assert not np.array_equal(
      np.asarray(older.params['head']['kernel']),
      np.asarray(loaded.params['head']['kernel']),
  )


@pytest.mark.timeout(240)
def test_predict_reproduces_trainer_evaluation_exactly(gated_run, loaded):
  final = final_metrics(gated_run)
  images, labels = loaded.eval_split()
  assert images.shape == (360, 8, 8, 1)
  out = loaded.predict(images)  # batches of 64: the last one padded
  assert out.logits.shape == (360, 10) and out.executed.shape == (360, 3)
  assert np.mean(out.labels == labels) == final['eval/deterministic/accuracy']
  assert (
      list(inference.block_rates(out.executed))
      == final['eval/deterministic/gate_rates']
  )
  assert np.isclose(
      out.macs.mean(), final['eval/deterministic/macs_per_image'], rtol=1e-12
  )
  csv = os.path.join(
      gated_run, 'eval', 'class_block_rates_deterministic_step00000022.csv'
  )
  expected = np.loadtxt(csv, delimiter=',', skiprows=1)[:, 1:]
  matrix = inference.class_block_rates(labels, out.executed, 10)
  np.testing.assert_allclose(matrix, expected, atol=5e-7, rtol=0)


@pytest.mark.timeout(120)
def test_predict_batches_any_size_the_same(loaded):
  images = loaded.eval_split(limit=23)[0]
  whole = loaded.predict(images)
  # 5 batches, the last padded with 2 rows
  small = loaded.predict(images, batch_size=5)
  assert small.logits.shape == (23, 10)
  np.testing.assert_allclose(small.logits, whole.logits, atol=1e-5)
  np.testing.assert_array_equal(small.executed, whole.executed)
  np.testing.assert_array_equal(
      whole.macs, loaded.costs.per_image(whole.executed)
  )
  assert set(np.unique(whole.gates)) <= {0.0, 1.0}
  assert np.all((whole.probs > 0) & (whole.probs < 1))


@pytest.mark.timeout(120)
def test_gate_modes(loaded):
  images = loaded.eval_split(limit=16)[0]
  expected = loaded.predict(images, gate_mode='expected')
  assert expected.executed.all()  # every branch runs, scaled by its probability
  np.testing.assert_allclose(expected.gates, expected.probs, rtol=1e-6)
  assert np.all(expected.macs == loaded.costs.dense)
  first, again = (
      loaded.predict(images, gate_mode='sample', seed=3) for _ in range(2)
  )
  np.testing.assert_array_equal(first.gates, again.gates)
  assert set(np.unique(first.gates)) <= {0.0, 1.0}


def test_bad_inputs_are_refused(loaded, tmp_path):
  with pytest.raises(
      ValueError,
      match=r'images must have shape \(N, 8, 8, 1\), got \(2, 8, 8\)',
  ):
    loaded.predict(np.zeros((2, 8, 8)))
  with pytest.raises(
      ConfigError, match='is not a workdir, a checkpoints directory or a step'
  ):
    inference.load(str(tmp_path))


def test_raw_pixels_and_non_finite_pixels_are_refused(loaded):
  images = loaded.eval_split(limit=4)[0]
  with pytest.raises(
      ConfigError,
      match=r'images are uint8 \(raw pixels\?\); .* pass input_scale=',
  ):
    loaded.predict(np.zeros((2, 8, 8, 1), np.uint8))
  with pytest.raises(
      ConfigError, match=r'input_scale=0.5 is only for integer images'
  ):
    loaded.predict(images, input_scale=0.5)
  bad = images.copy()
  bad[1, 0, 0, 0], bad[3, 2, 2, 0] = np.nan, np.inf
  with pytest.raises(
      ConfigError,
      match=r'2 image\(s\) hold NaN or infinite pixels \(indices 1, 3\)',
  ):
    loaded.predict(bad)
  with pytest.raises(ConfigError, match=r'batch_size=0 must be >= 1'):
    loaded.predict(images, batch_size=0)
  with pytest.raises(
      ConfigError,
      match=r'^images holds no image \(shape \(0, \.\.\.\)\); pass at '
      r'least one$',
  ):
    loaded.predict(images[:0])
  # Integer pixels with their scale are the float images.
  scaled = loaded.predict(np.full((2, 8, 8, 1), 4, np.uint8), input_scale=0.25)
  np.testing.assert_array_equal(
      scaled.logits, loaded.predict(np.ones((2, 8, 8, 1))).logits
  )


@pytest.mark.timeout(120)
def test_skip_matches_masked_model(loaded):
  images = loaded.eval_split(limit=16)[0]
  masked, skipped = (
      loaded.predict(images, skip=skip) for skip in (False, True)
  )
  np.testing.assert_array_equal(skipped.executed, masked.executed)
  np.testing.assert_allclose(skipped.logits, masked.logits, atol=1e-4)
  with pytest.raises(ConfigError, match="needs gate_mode='deterministic'"):
    loaded.predict(images, gate_mode='expected', skip=True)


def test_import_stays_light():
  # `import adanet_jax` must not pull in orbax; `adanet_jax.load` imports it on use.
  out = subprocess.run(
      [
          sys.executable,
          '-c',
          'import sys, adanet_jax; ' 'print("orbax.checkpoint" in sys.modules)',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert out.stdout.strip() == 'False', out.stderr[-2000:]
  assert adanet_jax.load is inference.load


def test_a_workdir_of_the_first_version_loads_and_predicts_the_same():
  # Written by the code of commit 63e0a62 (the first layout: config.json with
  # absolute `optim.decay_epochs`), with the logits it predicted then.
  workdir = os.path.join(REPO, 'tests', 'data', 'workdir_v1_digits8')
  expected = np.load(os.path.join(workdir, 'expected_predict.npz'))
  model = inference.load(workdir)
  assert model.step == 9
  # its decay_epochs were never read
  assert model.config.optim.schedule == 'cosine'
  assert model.config.optim.decay_fractions == (3 / 7, 5 / 7)
  out = model.predict(expected['images'])
  np.testing.assert_allclose(out.logits, expected['logits'], atol=1e-6, rtol=0)
  np.testing.assert_array_equal(out.gates, expected['gates'])
  np.testing.assert_array_equal(out.macs, expected['macs'])


class _CompileCounter:
  """Counts the programs JAX lowers for `predict`'s forward pass (JAX's public
  monitoring events: one lowering per new shape or gate mode, whether the
  persistent cache then has the executable or not)."""

  EVENT = '/jax/core/compile/jaxpr_to_mlir_module_duration'

  def __init__(self):
    self.count = 0

  def _listen(self, event: str, duration: float, **kwargs) -> None:
    del duration
    if event == self.EVENT and kwargs.get('fun_name') == 'jit(predict_forward)':
      self.count += 1

  def __enter__(self):
    jax.monitoring.register_event_duration_secs_listener(self._listen)
    return self

  def __exit__(self, *exc_info):
    jax.monitoring.unregister_event_duration_listener(self._listen)


@pytest.mark.timeout(120)
def test_predict_on_any_batch_size_compiles_once_per_bucket(loaded):
  # A fresh jit of the forward pass: no earlier test's shapes in its cache.
  model = dataclasses.replace(loaded)
  images = loaded.eval_split(limit=64)[0]
  assert model.config.eval.batch_size == 64
  assert inference.bucket_sizes(64) == (8, 16, 32, 64)
  with _CompileCounter() as compiles:
    # The reference: 64 images fill the largest bucket, no padding.
    reference = model.predict(images)
    outs = [model.predict(images[:n]) for n in range(1, 41)]
    # 16 + 16 + 8 rows: the buckets of 16 and 8 again
    chunked = model.predict(images[:40], batch_size=16)
  assert compiles.count == 4
  for out in outs + [chunked]:
    n = len(out.logits)
    np.testing.assert_array_equal(out.gates, reference.gates[:n])
    np.testing.assert_allclose(
        out.logits, reference.logits[:n], rtol=0, atol=1e-6
    )
  # Sample mode: an image's noise does not depend on the padding either.
  whole = model.predict(images[:16], gate_mode='sample', seed=1)
  few = model.predict(images[:5], gate_mode='sample', seed=1)
  np.testing.assert_array_equal(few.gates, whole.gates[:5])
  assert not np.array_equal(whole.gates, reference.gates[:16])
