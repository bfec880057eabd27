"""CIFAR-100 ConvNet-AIG: the CIFAR-10 recipe (`configs/cifar10.py`) with 100 classes.

Runbook (one host; data from tfds `cifar100`, prepared once with network
access, see `adanet_jax/data/tfds_pipeline.py`):

  python -m adanet_jax.main --config=configs/cifar100.py --workdir=workdirs/cifar100_aig110_t07
  python -m adanet_jax.main --config=configs/cifar100.py:gated=false \
      --workdir=workdirs/cifar100_resnet110          # the gates-off baseline

Argument string: as `configs/cifar10.py` (depth, width, gated, target, epochs).

Recipe: everything of `configs/cifar10.py` (ResNet-110, t = 0.7, loss weight
2 averaged over blocks, 350 epochs, LR 0.1 at batch 256 x0.1 at 150 and 250,
weight decay 5e-4, the same augmentation and the CIFAR-10 normalisation
constants, as the reference code has no CIFAR-100 recipe); only the dataset
and the head change (100 classes: 1,772,480 parameters, 5,850 more). Same
hardware and time as CIFAR-10: the step costs the same.

Compare with: the paper reports no CIFAR-100 number. ResNet-110 without gates
reaches about 27.2% test error with this augmentation (Huang et al. 2016,
"Deep Networks with Stochastic Depth", Table 1, constant depth: 27.22%), so
run the `gated=false` baseline beside the gated model and compare the two.
"""

import os

from adanet_jax import config_lib


def get_config(arg=None):
  config = config_lib.load_config(
      os.path.join(os.path.dirname(__file__), 'cifar10.py') + f':{arg or ""}'
  )
  config.data.name = 'cifar100'
  config.model.num_classes = 100
  return config
