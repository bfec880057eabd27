"""The PyTorch twin's train step, timed on the batch our step is timed on.

Used by `experiments/benchmark_step.py` (CPU) and `experiments/gpu_benchmark.py`
(CUDA). The twin is `adanet_jax/torch_model.py` (`from_config(config)`, NCHW
input, `net(x, gate_mode=..., noise=...) -> (logits, aux)`). The step is the
same computation as ours: cross-entropy plus the weighted target-rate loss
(`losses.target_rate_loss`'s definition) on the straight-through gates of
mode `sample`, then SGD with momentum and coupled L2 weight decay (PyTorch's
SGD is the reference optimizer). bfloat16 means `torch.autocast` (float32
parameters), as our compute dtype does; on CUDA the images and weights are
channels_last.
"""

import time

import numpy as np

from adanet_jax.model import factory
from adanet_jax.train import optim


class TwinUnavailable(RuntimeError):
  """torch or the PyTorch twin cannot be imported; the message says which."""


def load_twin():
  """Returns (torch, the adanet_jax.torch_model module) or raises TwinUnavailable."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise TwinUnavailable(
        f'torch is not installed ({e}); install torch==2.13.0 to compare '
        'with the PyTorch twin'
    ) from None
  try:
    from adanet_jax import torch_model  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise TwinUnavailable(
        f'the PyTorch model adanet_jax/torch_model.py cannot be imported ({e})'
    ) from None
  return torch, torch_model


def make_step(
    config,
    images: np.ndarray,
    labels: np.ndarray,
    device: str,
    compile_model: bool = False,
):
  """Builds the twin's train step on one fixed batch.

  Args:
    config: the run's config (model, dtype, loss and optimizer numbers).
    images: (B, H, W, C) float32 NHWC batch (ours); moved to the device as NCHW.
    labels: (B,) int labels.
    device: 'cpu' or 'cuda'.
    compile_model: wrap the model in torch.compile (first call compiles).

  Returns:
    A function `step()` that runs one train step and returns the loss tensor.
  """
  torch, torch_model = load_twin()
  net = torch_model.from_config(config).to(device)
  memory_format = (
      torch.channels_last if device == 'cuda' else torch.contiguous_format
  )
  net = net.to(memory_format=memory_format)
  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(
      device
  )
  x = x.contiguous(memory_format=memory_format)
  y = torch.from_numpy(np.asarray(labels, np.int64)).to(device)
  targets = torch.tensor(
      factory.block_targets(config), dtype=torch.float32, device=device
  )
  o = config.optim
  opt = torch.optim.SGD(
      net.parameters(),
      lr=optim.learning_rate(config),
      momentum=o.momentum,
      nesterov=o.nesterov,
      weight_decay=o.weight_decay,
  )
  forward = torch.compile(net) if compile_model else net
  autocast = config.model.dtype == 'bfloat16'
  num_blocks = targets.shape[0]

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
      logits, aux = forward(x, gate_mode=config.gates.train_mode)
    ce = torch.nn.functional.cross_entropy(logits.float(), y)
    zbar = aux['gates'].float().mean(0)
    rate = torch.where(
        targets < 1, (zbar - targets) ** 2, torch.zeros_like(targets)
    ).sum()
    if config.loss.reduction == 'mean':
      rate = rate / num_blocks
    loss = ce + config.loss.weight * rate
    loss.backward()
    opt.step()
    return loss

  return step


def time_step(step, device: str, num_steps: int) -> dict:
  """Times `step`: the first call (eager warm-up or torch.compile) and the mean
  of the next `num_steps`, each waited for.

  Returns:
    {'first_step_s', 'step_s'}.
  """
  import torch  # pylint: disable=import-outside-toplevel

  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  t0 = time.perf_counter()
  step()
  sync()
  t1 = time.perf_counter()
  step()  # a second untimed step: allocator and autotuning settle
  sync()
  t2 = time.perf_counter()
  for _ in range(num_steps):
    loss = step()
    sync()
  float(loss.detach())
  t3 = time.perf_counter()
  return {'first_step_s': t1 - t0, 'step_s': (t3 - t2) / max(num_steps, 1)}
