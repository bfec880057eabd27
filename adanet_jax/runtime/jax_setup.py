"""Process-wide JAX settings that entry points (not the library) apply."""

import logging
import os

import jax

DEFAULT_CACHE_DIR = os.path.join(
    os.path.expanduser('~'), '.cache', 'adanet_jax', 'xla'
)


def enable_compilation_cache(cache_dir: str | None = None) -> str:
  """Turns on JAX's persistent compilation cache, so a second launch of the
  same job loads its compiled steps instead of compiling them again.

  Args:
    cache_dir: where compiled programs are kept; default
      $ADANET_JAX_CACHE_DIR or ~/.cache/adanet_jax/xla.

  Returns:
    The directory used.
  """
  cache_dir = (
      cache_dir or os.environ.get('ADANET_JAX_CACHE_DIR') or DEFAULT_CACHE_DIR
  )
  os.makedirs(cache_dir, exist_ok=True)
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
