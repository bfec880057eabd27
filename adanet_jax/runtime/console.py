"""The console of an entry point: native libraries kept quiet at start-up,
native output filtered where a library prints to the process's descriptors,
and the late callbacks of a failed checkpoint write kept off the console.

Entry points call `quiet_native_logs` (through `cli.run`) before anything
loads TensorFlow or gRPC: they read these variables once, when their shared
libraries load. Only defaults are set; a variable the user set wins. Importing
the package sets nothing, so a notebook's own TensorFlow keeps its defaults.
"""

import contextlib
import logging
import os
import sys
import tempfile

# TensorFlow prints "oneDNN custom operations are on ..." from each of its two
# shared libraries at load time, and the first of those lines makes absl print
# "All log messages before absl::InitializeLog() is called ...". TensorFlow
# only runs the input pipeline and writes TensorBoard events here (the model
# is JAX), so its oneDNN kernels are not needed; off, the notice is not printed.
NATIVE_LOG_DEFAULTS = {
    'TF_ENABLE_ONEDNN_OPTS': '0',
    'TF_CPP_MIN_LOG_LEVEL': '1',  # TensorFlow C++: warnings and errors only
    'GRPC_VERBOSITY': 'ERROR',  # gRPC (JAX's distributed service client)
}


def quiet_native_logs(environ=None) -> None:
  """Sets the defaults of NATIVE_LOG_DEFAULTS in `environ` (default os.environ)."""
  environ = os.environ if environ is None else environ
  for key, value in NATIVE_LOG_DEFAULTS.items():
    environ.setdefault(key, value)


# What asyncio ("<Task, _GatheringFuture, ...> exception was never
# retrieved") and TensorStore report of the background tasks abandoned after
# a failure (`quiet_abandoned_async_errors`).
ABANDONED_TASK_MESSAGE_END = ' exception was never retrieved'
CLOSED_LOOP_MESSAGE = 'Event loop is closed'


def quiet_abandoned_async_errors() -> None:
  """Keeps the late echoes of a failed checkpoint save (a full disk) off the
  console; the failure itself is reported in one line.

  Orbax runs a save's TensorStore writes as asyncio tasks on loops of its
  own, in threads of its own, and stops at the first failed write. The
  writes still in flight then end one by one: TensorStore reports each
  whose loop is closed as an unraisable `RuntimeError: Event loop is
  closed`, and asyncio logs each failed task nobody awaited, when it is
  garbage-collected (at exit, say), as "Task exception was never retrieved"
  (or "_GatheringFuture exception ..."), all with a traceback, dozens of
  them. This process's own code runs no asyncio, so the process's
  unraisable hook drops exactly the first and a filter on the `asyncio`
  logger exactly the second; anything else goes where it went before.
  """
  previous = sys.unraisablehook

  def hook(unraisable):
    if not (
        isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == CLOSED_LOOP_MESSAGE
    ):
      previous(unraisable)

  sys.unraisablehook = hook
  logging.getLogger('asyncio').addFilter(
      lambda record: not record.getMessage()
      .split('\n', 1)[0]
      .endswith(ABANDONED_TASK_MESSAGE_END)
  )


@contextlib.contextmanager
def native_output_filtered(drop_prefixes: tuple[str, ...]):
  """Holds back what native code (and Python) writes to stdout/stderr inside
  the block; afterwards replays it on stderr without the lines starting with
  one of `drop_prefixes`, or all of it when the block raised.

  Used around gloo's connection set-up, which prints to the process's file
  descriptors directly ("[Gloo] Rank 0 is connected to 1 peer ranks ...").
  """
  sys.stdout.flush()
  sys.stderr.flush()
  saved = [os.dup(1), os.dup(2)]
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 1)
    os.dup2(held.fileno(), 2)
    failed = True
    try:
      yield
      failed = False
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      os.dup2(saved[0], 1)
      os.dup2(saved[1], 2)
      for fd in saved:
        os.close(fd)
      held.seek(0)
      lines = held.read().decode(errors='replace').splitlines(keepends=True)
      kept = [
          l for l in lines if failed or not l.lstrip().startswith(drop_prefixes)
      ]
      sys.stderr.write(''.join(kept))
      sys.stderr.flush()
