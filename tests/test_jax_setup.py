"""Tests of `adanet_jax.runtime.jax_setup`: an unusable compilation cache is
one warning line and the run goes on without it."""

import logging

from conftest import fill, remount
import jax
import pytest

from adanet_jax.runtime import jax_setup


@pytest.mark.parametrize(
    'fault,cause',
    [
        ('a file', 'File exists [errno 17]'),
        ('under a file ($HOME a file)', 'Not a directory [errno 20]'),
        ('read-only', 'Read-only file system [errno 30]'),
        ('full', 'No space left on device [errno 28]'),
    ],
)
def test_unusable_compilation_cache_is_one_warning_and_left_off(
    small_disk, caplog, fault, cause
):
  disk = small_disk('64k')
  (disk / 'home').write_text('')
  cache = {
      'a file': disk / 'home',
      'under a file ($HOME a file)': disk / 'home' / '.cache' / 'xla',
      'read-only': disk / 'xla',
      'full': disk / 'xla',
  }[fault]
  if fault == 'read-only':
    remount(disk, 'ro')
  if fault == 'full':
    cache.mkdir()
    fill(disk)
  in_use = jax.config.jax_compilation_cache_dir
  with caplog.at_level(logging.WARNING, logger='adanet_jax'):
    assert jax_setup.enable_compilation_cache(str(cache)) is None
  assert [r.getMessage() for r in caplog.records] == [
      f'compilation cache {cache} cannot be written ({cause}); running '
      'without it (set ADANET_JAX_CACHE_DIR to a writable directory to keep '
      'compiled programs between launches)'
  ]
  assert jax.config.jax_compilation_cache_dir == in_use  # left as it was
