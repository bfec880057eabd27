"""The console of an entry point: native libraries kept quiet at start-up, and
native output filtered where a library prints to the process's descriptors.

Entry points call `quiet_native_logs` (through `cli.run`) before anything
loads TensorFlow or gRPC: they read these variables once, when their shared
libraries load. Only defaults are set; a variable the user set wins. Importing
the package sets nothing, so a notebook's own TensorFlow keeps its defaults.
"""

import contextlib
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
