"""The executable cache: a second load skips tracing and computes the same,
its key follows what the program depends on, only a step compiled here is
kept, and a damaged entry or a failed write costs a compile, never the run.

Each test compiles a program of its own (`_step(offset)`): JAX's persistent
cache, shared by the test session, must not hold it already."""

import errno
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adanet_jax import executables
from adanet_jax.tools import launch
from conftest import load_repo_config, restore_state, run_module

TRACES = []


def _step(offset):
  """A step of the kept kind: (new state, metrics)."""

  def step(state, batch):
    TRACES.append(1)
    total = jnp.sum(batch) + offset
    return (jax.tree.map(lambda s: s * 0.5 + total, state),
            {'loss': total, 'parts': [jnp.mean(batch), jnp.max(batch)]})

  return jax.jit(step)


def _args(batch_size=4):
  return ({'w': jnp.arange(3.0), 'b': jnp.ones(())}, jnp.arange(float(batch_size)))


@pytest.fixture
def cache(tmp_path):
  directory = executables.enable(str(tmp_path))
  TRACES.clear()
  yield directory
  executables.disable()


def _entries(directory):
  return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def test_second_load_skips_tracing_and_computes_the_same(cache):
  compiled, source = executables.load_or_compile(_step(0.0), _args(), {'run': 1})
  assert (source, len(TRACES), len(_entries(cache))) == (executables.COMPILED, 1, 1)
  loaded, source = executables.load_or_compile(_step(0.0), _args(), {'run': 1})
  assert (source, len(TRACES)) == (executables.KEPT, 1)  # not traced again
  want, got = compiled(*_args()), loaded(*_args())
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(g, w)
  np.testing.assert_array_equal(got[0]['w'], [6.0, 6.5, 7.0])  # 0.5 * w + (0+1+2+3)
  assert float(got[1]['parts'][1]) == 3.0


def test_key_follows_description_shapes_and_package_source(cache, tmp_path, monkeypatch):
  assert executables.load_or_compile(_step(1.0), _args(), {'run': 1})[1] == executables.COMPILED
  # Another description misses; its program is in JAX's cache, so it is not kept.
  assert (executables.load_or_compile(_step(1.0), _args(), {'run': 2})[1]
          == executables.JAX_CACHE)
  assert (executables.load_or_compile(_step(1.0), _args(batch_size=8), {'run': 1})[1]
          == executables.COMPILED)
  assert len(_entries(cache)) == 2
  before = executables._entry_path(_args(), {'run': 1})
  source = tmp_path / 'source'
  shutil.copytree(executables._PACKAGE_DIR, source,
                  ignore=shutil.ignore_patterns('__pycache__'))
  monkeypatch.setattr(executables, '_PACKAGE_DIR', str(source))
  assert executables._entry_path(_args(), {'run': 1}) == before  # same source, same key
  with open(source / 'steps.py', 'a') as f:
    f.write('\n# changed\n')
  assert executables._entry_path(_args(), {'run': 1}) != before


@pytest.mark.parametrize('damage,offset,message', [
    ('truncated', 2.0, 'could not load'),
    ('one byte flipped', 2.5, 'its checksum does not match its contents'),
])
def test_damaged_entry_is_removed_and_the_step_compiled_again(cache, caplog, damage, offset,
                                                              message):
  executables.load_or_compile(_step(offset), _args(), {'run': 1})
  [entry] = _entries(cache)
  path = os.path.join(cache, entry)
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    if damage == 'truncated':
      f.truncate(size // 2)
    else:  # in the executable's bytes, past the pickle's header
      f.seek(size // 2)
      byte = f.read(1)
      f.seek(size // 2)
      f.write(bytes([byte[0] ^ 0x10]))
  with caplog.at_level(logging.WARNING):
    compiled, source = executables.load_or_compile(_step(offset), _args(), {'run': 1})
  assert source == executables.JAX_CACHE
  assert f'could not load {path}' in caplog.text and message in caplog.text
  assert _entries(cache) == []
  want = 0.5 * np.arange(3.0) + 6 + offset
  np.testing.assert_array_equal(compiled(*_args())[0]['w'], want)


def test_failed_write_warns_and_leaves_nothing(cache, caplog, monkeypatch):
  def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(executables.os, 'replace', full_disk)
  with caplog.at_level(logging.WARNING):
    compiled, source = executables.load_or_compile(_step(3.0), _args(), {'run': 1})
  assert source == executables.COMPILED and 'No space left on device' in caplog.text
  np.testing.assert_array_equal(compiled(*_args())[0]['w'], [9.0, 9.5, 10.0])
  assert _entries(cache) == []  # no partial file


def test_off_unless_enabled_and_other_outputs_not_kept(cache):
  executables.load_or_compile(jax.jit(lambda s, b: s['w'] * b[:3] + 4.0), _args(), {'run': 1})
  assert _entries(cache) == []  # not (new state, extras): compiled, not kept
  executables.disable()
  assert executables.load_or_compile(_step(5.0), _args(), {'run': 1})[1] == executables.COMPILED
  assert _entries(cache) == []


@pytest.mark.timeout(300)
def test_relaunch_loads_the_train_step_untraced_and_trains_the_same(tmp_path):
  # A fresh cache of this test alone: the first launch compiles the step.
  env = {**launch.cpu_devices_env(os.environ, 2), 'ADANET_JAX_CACHE_DIR': str(tmp_path / 'xla')}
  args = ['--config=configs/digits.py:depth=8', '--config.train.num_epochs=0.1',
          '--config.train.batch_size=32', '--config.train.sync_every_steps=1']
  outputs = []
  for name in ('first', 'second'):
    out = run_module('adanet_jax.main', *args, f'--workdir={tmp_path / name}', env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    outputs.append(out.stdout + out.stderr)
  assert 'compiled the train step' in outputs[0]
  assert 'loaded the train step from the executable cache' in outputs[1]
  assert len(os.listdir(tmp_path / 'xla' / executables.SUBDIR)) == 1
  config = load_repo_config('digits.py', 'depth=8')
  (step, first), (_, second) = (restore_state(config, tmp_path / n) for n in ('first', 'second'))
  assert step == 4  # 0.1 of 1,260 images at 32 a step
  for x, y in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.params)):
    np.testing.assert_array_equal(x, y)
