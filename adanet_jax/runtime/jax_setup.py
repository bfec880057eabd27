"""Process-wide JAX settings that entry points (not the library) apply."""

import logging
import os

from absl import logging as absl_logging
import jax

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser('~'), '.cache', 'adanet_jax', 'xla')


def enable_compilation_cache(cache_dir: str | None = None) -> str:
  """Turns on JAX's persistent compilation cache, so a second launch of the
  same job loads its compiled steps instead of compiling them again.

  Args:
    cache_dir: where compiled programs are kept; default
      $ADANET_JAX_CACHE_DIR or ~/.cache/adanet_jax/xla.

  Returns:
    The directory used.
  """
  cache_dir = cache_dir or os.environ.get('ADANET_JAX_CACHE_DIR') or DEFAULT_CACHE_DIR
  os.makedirs(cache_dir, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', cache_dir)
  # Every program, however quick to compile: initialising a model runs a
  # hundred or more small ones op by op (about 60 ms each on a CPU), which
  # made the first 7 s of every launch of the digits job; loaded, about 1 s.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return cache_dir


class _LibraryInfoFilter(logging.Filter):
  """Drops INFO records of chatty libraries (orbax logs every file it writes)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not any(
        part in record.pathname for part in ('/orbax/', '/jax/_src/', '/etils/'))


def quiet_library_logs() -> None:
  """Keeps the console to our own progress lines and library warnings."""
  absl_logging.get_absl_handler().addFilter(_LibraryInfoFilter())
