"""Float32 precision of the gate path against a float64 run of the PyTorch twin.

  python -m experiments.parity_torch [--models=resnet110,resnet50] [--batch=32]

For each model: random twin weights and BatchNorm statistics
(`torch_twin.randomize_`, or with `--weights=fresh` the reference's fresh
init, `torch_twin.reference_init_`), one training forward/backward pass on a random
batch with the same Gumbel noise everywhere (loss: cross-entropy + the
target-rate loss, reduction 'mean', the config's weight,
`fix_target_one=False`). Against the float64 twin it prints the relative
error (max |a - b| / max |b|) of the gates' fc1 kernel gradient and of the
train-mode gate logits for: the float32 twin, adanet_jax before (flax's
`nn.BatchNorm`: one-pass variance) and after (`adanet_jax.model.norm.BatchNorm`),
and the loss difference. CIFAR ResNet-110 runs at 32x32, ResNet-50 at 64x64.
"""

import contextlib
import functools
from unittest import mock

from absl import app, flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch

from adanet_jax import config_lib, torch_model
from adanet_jax.model import factory, norm, torch_io
from adanet_jax.runtime import jax_setup
from experiments import torch_twin

_MODELS = flags.DEFINE_list(
    'models', ['resnet110', 'resnet50'], 'resnet110 and/or resnet50.'
)
_BATCH = flags.DEFINE_integer('batch', 32, 'Batch size of the training pass.')
_WEIGHTS = flags.DEFINE_enum(
    'weights',
    'random',
    ['random', 'fresh'],
    "'random': torch_twin.randomize_ (random BatchNorm statistics, "
    "gates that disagree); 'fresh': the reference's fresh init "
    '(torch_twin.reference_init_).',
)

_CONFIGS = {
    'resnet110': ('configs/cifar10.py', 'depth=110', 32),
    'resnet50': ('configs/imagenet.py', 'resnet50', 64),
}


def fc1_gradients(grads_by_key) -> np.ndarray:
  """The gates' fc1 kernel gradients (reference layout), concatenated."""
  return np.concatenate(
      [
          np.asarray(grads_by_key[k]).ravel()
          for k in sorted(grads_by_key)
          if k.endswith('.fc1.weight')
      ]
  )


def measure(name: str, batch: int, weights: str) -> dict:
  """Relative errors against float64 for one model; see the module docstring."""
  path, arg, size = _CONFIGS[name]
  config = config_lib.load_config(f'{path}:{arg}' if arg else path)
  config.data.image_size = size
  config.gates.fix_target_one = False
  targets, weight = factory.block_targets(config), config.loss.weight
  rng = np.random.RandomState(0)
  images = rng.randn(batch, size, size, 3).astype(np.float32)
  labels = rng.randint(0, config.model.num_classes, batch)
  key = jax.random.key(0)  # our gates' Gumbel noise; the twins get the same
  noise = torch_twin.gumbel_noise(key, batch, factory.num_blocks(config.model))
  net32 = torch_model.from_config(config).train()
  if weights == 'random':
    torch_twin.randomize_(net32, seed=1)
  else:
    torch_twin.reference_init_(net32, imagenet=name == 'resnet50', seed=1)
  net64 = torch_model.from_config(config).double().train()
  net64.load_state_dict(net32.state_dict())
  state_dict = {k: v.numpy() for k, v in net32.state_dict().items()}
  results = {}
  for label, net in (('twin float64', net64), ('twin float32', net32)):
    loss, aux = torch_twin.twin_train_forward_backward(
        net, images, labels, noise, targets, weight
    )
    grads = {k: p.grad.numpy() for k, p in net.named_parameters()}
    results[label] = (loss, aux['logits'], fc1_gradients(grads))
  # flax's one-pass BatchNorm
  before = mock.patch.object(norm, 'BatchNorm', nn.BatchNorm)
  for label, patch in (
      ('ours before (one-pass)', before),
      ('ours after (two-pass)', contextlib.nullcontext()),
  ):
    with patch:
      model = factory.create_model(config)
      shape = jnp.zeros((1, size, size, 3))
      template = jax.eval_shape(
          functools.partial(model.init, jax.random.key(0), shape, train=False)
      )
      variables = torch_io.import_state_dict(state_dict, template)
      loss, aux, batch_stats, grads = torch_twin.our_train_forward_backward(
          model, variables, images, labels, key, targets, weight
      )
    grads = torch_io.export_state_dict(
        {'params': grads, 'batch_stats': batch_stats}
    )
    results[label] = (float(loss), aux['logits'], fc1_gradients(grads))
  ref_loss, ref_logits, ref_fc1 = results.pop('twin float64')
  return {
      label: dict(
          fc1_grad=torch_twin.relative_error(fc1, ref_fc1),
          gate_logits=torch_twin.relative_error(logits, ref_logits),
          loss=abs(loss - ref_loss),
      )
      for label, (loss, logits, fc1) in results.items()
  }


def main(argv):
  del argv
  jax_setup.enable_compilation_cache()
  torch.manual_seed(0)
  for name in _MODELS.value:
    print(
        f'{name}, batch {_BATCH.value}, {_WEIGHTS.value} weights: relative error against the '
        'float64 twin',
        flush=True,
    )
    for label, r in measure(name, _BATCH.value, _WEIGHTS.value).items():
      print(
          f'  {label:24s} gate fc1 kernel grad {r["fc1_grad"]:.2e}   train-mode gate '
          f'logits {r["gate_logits"]:.2e}   |loss diff| {r["loss"]:.2e}',
          flush=True,
      )


if __name__ == '__main__':
  app.run(main)
