"""Helpers of the parity tests and benchmarks around the PyTorch model.

The model itself is `adanet_jax/torch_model.py` (`from_config(config)`, the
reference state_dict layout); here are what only the parity checks need:
random weights (`randomize_`), the reference's fresh init
(`reference_init_`), the Gumbel noise our gates draw (`gumbel_noise`), one
training forward/backward pass of each side, and the error measure.
"""

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from adanet_jax.model import gate, resnet
from adanet_jax.torch_model import ResNet


def relative_error(a, b) -> float:
  """max |a - b| / max |b|, in float64: the error measure of the parity checks."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


def randomize_(net: ResNet, seed: int = 0) -> ResNet:
  """Random weights and BatchNorm statistics, in place, for parity checks.

  Convs He-normal, BatchNorm gamma U(0, 1), beta N(0, 0.1^2), running mean
  N(0, 0.1^2), running variance U(0.5, 1.5); the gates' last layer N(0, 1)
  with bias N(0, 0.5^2), so that decisions differ between images.
  """
  g = torch.Generator().manual_seed(seed)

  def normal(t, std, mean=0.0):
    t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) * std + mean)

  def uniform(t, lo, hi):
    t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * (hi - lo) + lo)

  with torch.no_grad():
    for name, module in net.named_modules():
      if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        uniform(module.weight, 0.0, 1.0)
        normal(module.bias, 0.1)
        normal(module.running_mean, 0.1)
        uniform(module.running_var, 0.5, 1.5)
      elif name.endswith('fc2'):
        normal(module.weight, 1.0)
        normal(module.bias, 0.5)
      elif isinstance(module, (nn.Conv2d, nn.Linear)):
        fan_in = module.weight[0].numel()
        normal(module.weight, (2.0 / fan_in) ** 0.5)
        if module.bias is not None:
          uniform(module.bias, -(fan_in**-0.5), fan_in**-0.5)
  return net


def reference_init_(net: ResNet, imagenet: bool, seed: int = 0) -> ResNet:
  """The reference model's fresh init (PyTorch 0.3.1), in place.

  BatchNorm gammas U(0, 1) (that PyTorch's default) on every BatchNorm of the
  CIFAR model, only on the gates' of the ImageNet model, whose other
  BatchNorms get 1 and whose convs (gate fc1 too) He fan-out normal; the
  CIFAR model keeps PyTorch's default conv init. The gates' fc2 keep
  N(0, 1e-3) and bias (0.1, 2.0).
  """
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, module in net.named_modules():
      if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        gate_bn = name.endswith('fc1bn')
        if gate_bn or not imagenet:
          module.weight.copy_(torch.rand(module.weight.shape, generator=g))
        else:
          module.weight.fill_(1.0)
      elif (
          imagenet
          and isinstance(module, nn.Conv2d)
          and not name.endswith('fc2')
      ):
        fan_out = module.weight.shape[0] * module.weight[0, 0].numel()
        module.weight.copy_(
            torch.randn(module.weight.shape, generator=g) * (2 / fan_out) ** 0.5
        )
  return net


def gumbel_noise(key, batch: int, num_blocks: int) -> np.ndarray:
  """The Gumbel noise adanet_jax's gates draw in mode 'sample' from the model's `key`.

  Block i's gate draws `gate.gumbel_noise(resnet.block_key(key, i), (batch, 2))`;
  passed as the twin's `noise`, it makes the twin decide on the very same noise
  as `model.apply(..., gate_mode='sample', key=key)`.

  Returns:
    (batch, num_blocks, 2) float32 numpy.
  """
  return np.stack(
      [
          np.asarray(gate.gumbel_noise(resnet.block_key(key, i), (batch, 2)))
          for i in range(num_blocks)
      ],
      axis=1,
  )


def twin_train_forward_backward(
    net: ResNet, images, labels, noise, targets, weight: float
):
  """One training forward and backward pass of the twin (no optimizer step).

  The loss is adanet_jax's with reduction 'mean': cross-entropy + weight x
  the mean over all blocks of (zbar - t)^2, blocks with target 1 left out of
  the sum. The twin must be in train mode; gradients accumulate in `.grad`
  and the BatchNorm running statistics are updated.

  Args:
    net: the twin, in its dtype.
    images: NHWC numpy; labels: (B,) ints; noise: (B, blocks, 2) numpy.
    targets: per-block targets; weight: the target-rate loss weight.

  Returns:
    (loss as a float, aux of numpy arrays).
  """
  dtype = next(net.parameters()).dtype
  logits, aux = net(
      torch.from_numpy(images.transpose(0, 3, 1, 2)).to(dtype),
      gate_mode='sample',
      noise=torch.from_numpy(noise).to(dtype),
  )
  t = torch.tensor(targets, dtype=dtype)
  rate = torch.where(t < 1, (aux['gates'].mean(0) - t) ** 2, 0).sum() / len(
      targets
  )
  loss = F.cross_entropy(logits, torch.from_numpy(labels)) + weight * rate
  loss.backward()
  return float(loss.detach()), {k: v.detach().numpy() for k, v in aux.items()}


def our_train_forward_backward(
    model, variables, images, labels, key, targets, weight: float
):
  """The same pass in adanet_jax, with the loss of `adanet_jax.train.losses` ('mean'),
  its gates drawing their noise from `key` (the twin's: `gumbel_noise(key, ...)`).

  Returns:
    (loss, aux, new batch_stats, gradients of the params), as numpy; jitted
    per call (the model is closed over).
  """
  import jax  # pylint: disable=import-outside-toplevel

  from adanet_jax.train import losses  # pylint: disable=import-outside-toplevel

  images = np.asarray(images, np.float32)

  @jax.jit
  def run(params, batch_stats):
    def loss_fn(params):
      (logits, aux), updates = model.apply(
          {'params': params, 'batch_stats': batch_stats},
          images,
          train=True,
          gate_mode='sample',
          key=key,
          mutable=['batch_stats'],
      )
      loss, _ = losses.total_loss(logits, labels, aux, targets, weight, 'mean')
      return loss, (aux, updates['batch_stats'])

    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  (loss, (aux, batch_stats)), grads = run(
      variables['params'], variables['batch_stats']
  )
  return jax.tree.map(np.asarray, (loss, aux, batch_stats, grads))
