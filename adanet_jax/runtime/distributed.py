"""Multi-process (multi-host) start-up: `jax.distributed.initialize` from
flags, the environment, or JAX's own cluster auto-detection.

Each of the three settings (coordinator address, process count, process id)
comes from the first of:
  1. the flags `--coordinator_address`, `--num_processes`, `--process_id`;
  2. the environment `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
     `JAX_PROCESS_ID` (what `adanet_jax.tools.launch` sets).
Then:
  - all three set: `initialize` with exactly those, no auto-detection;
  - otherwise `initialize` with those that are set, and JAX's own
    auto-detection fills in the rest:
    - inside a cluster JAX recognises (Cloud TPU VM, SLURM `srun`, Open MPI,
      Kubernetes JobSet) it joins that job. Under SLURM JAX also gives each
      process only the accelerator of its local rank (one process per GPU);
      set `JAX_LOCAL_DEVICE_IDS` for another layout;
    - outside any, JAX raises ValueError (a setting it cannot define) before
      it starts anything: with none set, the run is one process; with some
      set, a ConfigError names what is missing.

`initialize` must run before any JAX computation (JAX refuses otherwise), so
entry points call it first.
"""

import contextlib
import dataclasses
import logging
import os
import re
from typing import Mapping

from absl import logging as absl_logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from adanet_jax.errors import ConfigError, PeerProcessError

ENV_COORDINATOR = 'JAX_COORDINATOR_ADDRESS'  # also read by JAX itself
# After this long without a heartbeat JAX's coordination service declares a
# process dead and ends the others (JAX's default is 100 s). Heartbeats come
# from a native thread, so neither a long compile nor Python holding the GIL
# delays them.
HEARTBEAT_TIMEOUT_S = 30
# How XLA:CPU's collectives (gloo) report that a peer's connection broke: the
# peer process died. `peer_failures_reported` names the operation and cause.
_GLOO_PEER_LOST = re.compile(
    r'Gloo (\S+) failed: .*?'
    r'(Connection reset by peer|Connection closed by peer|Broken pipe)'
)
ENV_NUM_PROCESSES = 'JAX_NUM_PROCESSES'
ENV_PROCESS_ID = 'JAX_PROCESS_ID'

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Settings:
  """The explicit distributed settings; None where unset."""

  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  def values(self) -> tuple:
    return (self.coordinator_address, self.num_processes, self.process_id)

  @property
  def complete(self) -> bool:
    return None not in self.values()

  @property
  def empty(self) -> bool:
    return all(v is None for v in self.values())


def resolve_settings(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
  """Each setting from its flag, else from the environment.

  Args:
    coordinator_address: `host:port` of process 0's coordinator, or None.
    num_processes: total number of processes, or None.
    process_id: this process's id in [0, num_processes), or None.
    environ: the environment (default `os.environ`).

  Returns:
    The settings, checked for range.
  """
  environ = os.environ if environ is None else environ
  settings = Settings(
      coordinator_address or environ.get(ENV_COORDINATOR) or None,
      _int_setting(num_processes, environ, ENV_NUM_PROCESSES),
      _int_setting(process_id, environ, ENV_PROCESS_ID),
  )
  count, index = settings.num_processes, settings.process_id
  if count is not None and count < 1:
    raise ConfigError(f'the process count must be >= 1, not {count}')
  if index is not None and (
      index < 0 or (count is not None and index >= count)
  ):
    raise ConfigError(
        f'process id {index} is outside [0, {count}) (the process count)'
    )
  return settings


def _int_setting(
    flag_value: int | None, environ: Mapping[str, str], name: str
) -> int | None:
  if flag_value is not None:
    return flag_value
  raw = environ.get(name, '').strip()
  if not raw:
    return None
  try:
    return int(raw)
  except ValueError:
    raise ConfigError(
        f'environment variable {name}={raw!r} must be an integer'
    ) from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
  """Joins the distributed job the flags, environment or cluster describe.

  Args:
    coordinator_address, num_processes, process_id: flag values (None: unset).
    environ: the environment (default `os.environ`).

  Returns:
    How the process started, for the log: 'single process', 'explicit
    settings' or 'cluster environment detected by JAX'.

  Raises:
    ConfigError: some settings are given, and no cluster environment
      supplies the rest.
  """
  settings = resolve_settings(
      coordinator_address, num_processes, process_id, environ
  )
  if settings.complete:
    # Explicit settings win: no cluster detection (which could, e.g. under
    # SLURM, also restrict the visible devices).
    logger.info(
        'joining the jax.distributed job: waiting until all %d processes have '
        'connected to the coordinator %s',
        settings.num_processes,
        settings.coordinator_address,
    )
    _join(*settings.values(), cluster_detection_method='deactivate')
    return 'explicit settings'
  try:
    # JAX detects what is None from the cluster environment it recognises;
    # outside any, it raises ValueError (a setting it cannot define) before
    # it connects or changes anything.
    _join(*settings.values())
  except ValueError:
    if jax.distributed.is_initialized():
      raise
    if not settings.empty:
      raise ConfigError(
          'incomplete distributed settings (coordinator address, process count, process id = '
          f'{settings.values()}) and no cluster environment to detect the rest: give all three '
          f'(flags, or {ENV_COORDINATOR} / {ENV_NUM_PROCESSES} / {ENV_PROCESS_ID})'
      ) from None
    return 'single process'
  return 'cluster environment detected by JAX'


def _join(
    coordinator_address=None, num_processes=None, process_id=None, **kwargs
) -> None:
  """`jax.distributed.initialize(...)`, then `connect_collectives`, keeping
  gloo's connection lines off the console unless something fails."""
  from adanet_jax.runtime import console  # pylint: disable=import-outside-toplevel

  with console.native_output_filtered(drop_prefixes=('[Gloo]',)):
    jax.distributed.initialize(
        coordinator_address,
        num_processes,
        process_id,
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
        **kwargs,
    )
    connect_collectives()


def connect_collectives() -> None:
  """On CPU, opens the collective channels between the processes now, while
  they are in step.

  XLA:CPU (gloo) connects a group of devices at its first collective and
  gives up ("Gloo context initialization failed") when the processes arrive
  there more than 30 s apart, e.g. one still compiling the train step on a
  busy machine; once connected, a collective waits far longer. Connects all
  devices together (the train and eval steps' group) and one device per
  process (the groups of orbax's barriers). A no-op for one process.
  """
  if jax.process_count() == 1 or jax.default_backend() != 'cpu':
    return
  multihost_utils.sync_global_devices(
      'adanet_jax.runtime.distributed.connect_collectives'
  )
  mesh = jax.make_mesh(
      (jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,)
  )
  ones = jax.make_array_from_process_local_data(
      NamedSharding(mesh, P('data')),
      np.ones(jax.local_device_count(), np.float32),
  )
  jax.block_until_ready(
      jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(ones)
  )


@contextlib.contextmanager
def peer_failures_reported():
  """A collective that failed because another process of the job died
  becomes the one-line PeerProcessError (its entry point then exits at once,
  `cli.fail`); any other error passes unchanged.

  Only the death of a process other than the coordinator (process 0) comes
  here: the coordinator's ends the others from a native thread of JAX's
  distributed client within a second, before any Python code can run.
  """
  try:
    yield
  except jax.errors.JaxRuntimeError as e:
    found = _GLOO_PEER_LOST.search(str(e))
    if found is None or jax.process_count() == 1:
      raise
    raise PeerProcessError(
        f'process {jax.process_index()} of {jax.process_count()}: another '
        f'process of the job died ({found.group(1)} failed: '
        f'{found.group(2)}); this one stopped too; run the same command '
        'again for all processes to resume from the last checkpoint'
    ) from None


def log_only_on_chief() -> None:
  """Keeps INFO logs to process 0; the others still log warnings and errors,
  so a failure on any process shows up."""
  if jax.process_index() != 0:
    absl_logging.set_verbosity(absl_logging.WARNING)  # the root logger's level
