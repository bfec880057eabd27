"""CIFAR-10 wide ConvNet-AIG: a Wide ResNet (WRN-d-k, pre-activation blocks)
with a ConvNet-AIG gate on every block; default WRN-28-10 at t = 0.7.

The paper has no wide model (the seed document's "Wide AdaNet" mentions one);
this is the natural combination: the Wide ResNet recipe of Zagoruyko &
Komodakis (2016) for the backbone and optimiser, the ConvNet-AIG CIFAR gate
loss (t = 0.7, weight 2 averaged over blocks).

Runbook (one host; data from tfds `cifar10`, see `adanet_jax/data/tfds_pipeline.py`):

  python -m adanet_jax.main --config=configs/wide_cifar10.py --workdir=workdirs/cifar10_aig_wrn28_10
  python -m adanet_jax.main --config=configs/wide_cifar10.py:gated=false \
      --workdir=workdirs/cifar10_wrn28_10            # the gates-off baseline
  python -m adanet_jax.main --config=configs/wide_cifar10.py:depth=16,width=8 \
      --workdir=workdirs/cifar10_aig_wrn16_8         # a cheaper member

Argument string (all optional): depth (6n+4: 10, 16, 22, 28, 40; default 28),
width (k, default 10), gated (default true), target (default 0.7), epochs
(default 200; the LR steps stay at 30%, 60% and 80% of it: 60, 120, 160).

Recipe (WRN paper): SGD with Nesterov momentum 0.9, LR 0.1 at batch 128
(scaled linearly with train.batch_size), x0.2 at epochs 60, 120 and 160 of
200, weight decay 5e-4 (coupled L2 on every parameter), no dropout; the
ConvNet-AIG CIFAR augmentation and normalisation. BatchNorm gammas: 1 in the
backbone (the WRN code), U(0, 1) in the gates (the ConvNet-AIG gate of
`configs/cifar10.py`, `model.bn_gamma_init='reference'`). WRN-28-10 has 36.5 M
parameters and 5.24 GMACs per 32x32 image with every block run (21x
ResNet-110). Hardware and time: one GPU. The train step alone
(experiments/benchmark_step.py, batch 128, one H200, JAX 0.11.2) ran at
4,380 images/s in float32 and 8,080 in bfloat16: the 10 M training images
take about 40 / 20 minutes plus evaluation, if the input pipeline keeps up
(about 10,000 CIFAR images/s on 2 CPU cores here). On a 2-core CPU use it
only for smoke tests.

Compare with: no ConvNet-AIG number exists for this model. WRN-28-10 without
gates: 4.00% test error on CIFAR-10 (Zagoruyko & Komodakis 2016, Table 4,
no dropout); run the `gated=false` baseline beside the gated model.
"""

import os

from adanet_jax import config_lib

LR_STEPS = (0.3, 0.6, 0.8)  # fractions of the training epochs


def get_config(arg=None):
  args = config_lib.parse_arg(
      arg, depth=28, width=10, gated=True, target=0.7, epochs=200.0
  )
  # The CIFAR-10 ConvNet-AIG config (data, gates, loss), with the WRN backbone and optimiser.
  config = config_lib.load_config(
      os.path.join(os.path.dirname(__file__), 'cifar10.py')
      + f':gated={args.gated},target={args.target},epochs={args.epochs}'
  )
  config.model.name = 'wide_resnet'
  config.model.depth = args.depth
  config.model.width = args.width
  config.optim.base_batch_size = 128
  config.optim.nesterov = True
  config.optim.decay_fractions = LR_STEPS
  config.optim.decay_factor = 0.2
  config.train.batch_size = 128
  return config
