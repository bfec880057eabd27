"""Process-wide JAX settings that entry points (not the library) apply."""

import logging
import os
import tempfile

import jax

from adanet_jax.errors import os_error_text

logger = logging.getLogger(__name__)

# What the cache's writability probe writes: one page.
_PROBE_BYTES = 4096

DEFAULT_CACHE_DIR = os.path.join(
    os.path.expanduser('~'), '.cache', 'adanet_jax', 'xla'
)


def enable_compilation_cache(cache_dir: str | None = None) -> str | None:
  """Turns on JAX's persistent compilation cache, so a second launch of the
  same job loads its compiled steps instead of compiling them again.

  A cache directory that cannot be written (a file, a read-only or full
  disk) is reported in one warning line and the run goes on without it: the
  cache only saves compile time.

  Args:
    cache_dir: where compiled programs are kept; default
      $ADANET_JAX_CACHE_DIR or ~/.cache/adanet_jax/xla.

  Returns:
    The directory used, or None if the cache is off.
  """
  cache_dir = (
      cache_dir or os.environ.get('ADANET_JAX_CACHE_DIR') or DEFAULT_CACHE_DIR
  )
  try:
    os.makedirs(cache_dir, exist_ok=True)
    # A few bytes written and flushed: creating an empty file succeeds on a
    # full disk.
    with tempfile.TemporaryFile(dir=cache_dir) as probe:
      probe.write(b'\0' * _PROBE_BYTES)
      probe.flush()
      os.fsync(probe.fileno())
  except OSError as e:
    logger.warning(
        'compilation cache %s cannot be written (%s); running without it '
        '(set ADANET_JAX_CACHE_DIR to a writable directory to keep compiled '
        'programs between launches)',
        cache_dir,
        os_error_text(e) or e,
    )
    return None
  jax.config.update('jax_compilation_cache_dir', cache_dir)
  # Every program, however quick to compile: initialising a model runs a
  # hundred or more small ones op by op, which together would hold up every
  # launch (figures: README, "Compilation cache").
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return cache_dir


# The loggers of the libraries that log every file they write or program
# they compile at INFO: orbax logs through absl's logger, JAX and etils
# through loggers of their own names.
CHATTY_LOGGERS = ('absl', 'jax', 'etils')


def quiet_library_logs() -> None:
  """Keeps the console to our own progress lines and library warnings.

  Our own modules log through loggers under `adanet_jax`, so raising the
  libraries' loggers to WARNING leaves ours as they were.
  """
  for name in CHATTY_LOGGERS:
    logging.getLogger(name).setLevel(logging.WARNING)
