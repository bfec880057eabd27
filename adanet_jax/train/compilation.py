"""The train step compiled ahead of time over a run's shardings.

Before its first call the step is traced, lowered and compiled (or loaded
from JAX's persistent compilation cache). How long that took and whether it
was a cache load go into the first log record of the launch in metrics.jsonl
(`run/compile_s`, `run/compile_cached`).
"""

import logging
import time
from typing import Callable

import jax

from adanet_jax.train import placement as placement_lib

logger = logging.getLogger(__name__)


class CacheHitCounter:
  """Counts persistent-compilation-cache hits while it is entered (JAX's
  public monitoring events; `count` stays 0 when the cache is off or missed)."""

  HIT_EVENT = '/jax/compilation_cache/cache_hits'

  def __init__(self):
    self.count = 0

  def _listen(self, event: str, **kwargs) -> None:
    del kwargs
    if event == self.HIT_EVENT:
      self.count += 1

  def __enter__(self):
    jax.monitoring.register_event_listener(self._listen)
    return self

  def __exit__(self, *exc_info):
    jax.monitoring.unregister_event_listener(self._listen)


class CompiledTrainStep:
  """`(state, batch) -> (state, metrics)`: a train step with the run's key and
  hparams bound, jitted over the placement with the state donated.

  Attributes:
    executable: the compiled step (None before the first call or `compile`).
    compile_info: {'compile_s', 'compile_cached'} once compiled.
  """

  def __init__(
      self,
      train_step: Callable,
      placement: placement_lib.Placement,
      key: jax.Array,
      hparams: dict,
  ):
    """`train_step(state, batch, key, hparams)`; `key` and `hparams` replicated."""
    r = placement.replicated
    self._jitted = jax.jit(
        train_step,
        in_shardings=(r, placement.data, r, r),
        out_shardings=r,
        donate_argnums=0,
    )
    self.key, self.hparams = key, hparams
    self.executable = None
    self.compile_info = None

  def compile(self, state, batch: dict) -> dict:
    """Traces, lowers and compiles (or loads) the step for these arguments.

    Returns:
      {'compile_s': seconds, 'compile_cached': 1.0 if the executable came from
      JAX's persistent compilation cache else 0.0}.
    """
    logger.info('compiling the train step...')
    start = time.perf_counter()
    with CacheHitCounter() as hits:
      self.executable = self._jitted.lower(
          state, batch, self.key, self.hparams
      ).compile()
    seconds = time.perf_counter() - start
    logger.info(
        '%s the train step in %.1f s',
        'loaded' if hits.count else 'compiled',
        seconds,
    )
    self.compile_info = {
        'compile_s': seconds,
        'compile_cached': float(hits.count > 0),
    }
    return self.compile_info

  def __call__(self, state, batch: dict):
    """One step (compiled on the first call)."""
    if self.executable is None:
      self.compile(state, batch)
    return self.executable(state, batch, self.key, self.hparams)
