"""Writes a trained workdir as a PyTorch state_dict in the reference ConvNet-AIG layout.

  python -m adanet_jax.tools.export_torch --workdir=DIR --output=model.pth [--step=N]

The file loads into the reference model (or `experiments/torch_twin.py`'s
twin of the same config) with `load_state_dict(strict=True)`; every
BatchNorm's `num_batches_tracked` is the checkpoint's step. Reading it back:
`adanet_jax.load('model.pth', config=...)` or `--config.init_from=model.pth`.
Needs torch (`pip install torch==2.13.0`). Expected failures (no such
workdir or step, no torch, an unwritable output) are one line on stderr; a
failed write (a full disk, a read-only or immutable directory) leaves
nothing behind and exits with status 1.
"""

import io
import os

from absl import flags

from adanet_jax.errors import ConfigError
from adanet_jax.infer import inference
from adanet_jax.model import torch_io
from adanet_jax.runtime import cli
from adanet_jax.train import rundir


def define_flags() -> dict:
  return dict(
      workdir=flags.DEFINE_string(
          'workdir', None, 'Workdir of a training run.'
      ),
      output=flags.DEFINE_string('output', None, 'The .pth file to write.'),
      step=flags.DEFINE_integer(
          'step', None, 'Checkpoint step to export (default the latest).'
      ),
  )


def export(workdir: str, output: str, step: int | None = None) -> int:
  """Exports checkpoint `step` (default the latest) of `workdir` to `output`.

  Returns:
    The step that was exported.
  """
  if not torch_io.is_torch_file(output):
    raise ConfigError(f'--output={output!r} must end with .pth or .pt')
  parent = os.path.dirname(os.path.abspath(output))
  if not os.path.isdir(parent):
    raise ConfigError(
        f'--output={output!r}: directory {parent!r} does not exist'
    )
  torch = torch_io.require_torch()  # fail before loading anything
  if not os.path.isdir(rundir.checkpoint_dir(workdir)):
    raise ConfigError(
        f'--workdir={workdir!r} is not a workdir with checkpoints'
    )
  path = os.path.join(
      rundir.checkpoint_dir(workdir), *([] if step is None else [str(step)])
  )
  model = inference.load(path)
  state_dict = torch_io.export_state_dict(
      model.variables, num_batches_tracked=model.step
  )
  # Serialized in memory first: torch's own file writer reports a failed
  # write (a full disk) as a RuntimeError with no OS error in it.
  buffer = io.BytesIO()
  torch.save(state_dict, buffer)
  with rundir.reported_file(output, 'nothing was exported', 'wb') as f:
    f.write(buffer.getbuffer())
  return model.step


def main(args) -> None:
  cli.require(args, 'workdir', 'output')
  step = export(args.workdir, args.output, args.step)
  print(f'wrote {args.output} (step {step})')


if __name__ == '__main__':
  cli.run(main, define_flags, overrides=False)
