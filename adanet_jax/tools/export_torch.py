"""Writes a trained workdir as a PyTorch checkpoint in the reference ConvNet-AIG layout.

  python -m adanet_jax.tools.export_torch --workdir=DIR --output=model.pth [--step=N]

The file is a dict as the reference's training scripts save:
`torch.load(path)['state_dict']` loads into the reference model with
`load_state_dict(strict=True)` (every BatchNorm's `num_batches_tracked` is
the checkpoint's step); 'config' holds the run's config (JSON values) and
'step' the step (`torch_io.export_checkpoint`). Reading it back:
`adanet_jax.torch_model.from_file('model.pth')` (a PyTorch module),
`adanet_jax.load('model.pth')` or `--config.init_from=model.pth`. Needs torch
(`pip install adanet_jax[torch]`). It prints one line, what it wrote.
Expected failures (no such workdir or step, no torch, an unwritable output)
are one line on stderr; a failed write (a full disk, a read-only or
immutable directory) leaves nothing behind and exits with status 1.
"""

import io
import os

from absl import flags

from adanet_jax.errors import ConfigError
from adanet_jax.infer import inference
from adanet_jax.model import torch_io
from adanet_jax.runtime import cli, jax_setup
from adanet_jax.train import rundir


def define_flags() -> dict:
  return dict(
      workdir=flags.DEFINE_string(
          'workdir', None, 'Workdir of a training run.'
      ),
      output=flags.DEFINE_string(
          'output', None, 'The PyTorch file to write (any name).'
      ),
      step=flags.DEFINE_integer(
          'step', None, 'Checkpoint step to export (default the latest).'
      ),
  )


def export(workdir: str, output: str, step: int | None = None) -> int:
  """Exports checkpoint `step` (default the latest) of `workdir` to `output`.

  Returns:
    The step that was exported.
  """
  if os.path.isdir(output):
    raise ConfigError(f'--output={output!r} is a directory; name a file')
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
  checkpoint = torch_io.export_checkpoint(
      model.variables, model.config, model.step
  )
  # Serialized in memory first: torch's own file writer reports a failed
  # write (a full disk) as a RuntimeError with no OS error in it.
  buffer = io.BytesIO()
  torch.save(checkpoint, buffer)
  with rundir.reported_file(output, 'nothing was exported', 'wb') as f:
    f.write(buffer.getbuffer())
  return model.step


def main(args) -> None:
  cli.require(args, 'workdir', 'output')
  # orbax and JAX log every file they open and backend they probe at INFO
  jax_setup.quiet_library_logs()
  step = export(args.workdir, args.output, args.step)
  print(f'wrote {args.output} (step {step})')


if __name__ == '__main__':
  cli.run(main, define_flags, overrides=False)
