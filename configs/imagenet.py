"""ImageNet ConvNet-AIG: ResNet-50/101/152 with the reference per-layer targets
and the reference code's recipe.

Argument string: the architecture first (resnet50 default, resnet101,
resnet152), then optional t (the target of the non-fixed blocks; default 0.6
for ResNet-50, 0.5 for ResNet-101/152), gated (true/false) and epochs
(default 100; LR x0.1 at 30%, 60% and 90% of the training: every 30 epochs
of 100).

Runbook. Data: tfds `imagenet2012` needs a manual download: put
ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar into
<data_dir>/downloads/manual and prepare it once (`adanet_jax/data/tfds_pipeline.py`
prints the exact command when the data is missing). The paper's runs, one
command each:

  for t in 0.4 0.5 0.6 0.7; do
    python -m adanet_jax.main --config=configs/imagenet.py:resnet50,t=$t \
        --workdir=workdirs/imagenet_aig50_t$t; done
  for t in 0.3 0.5; do
    python -m adanet_jax.main --config=configs/imagenet.py:resnet101,t=$t \
        --workdir=workdirs/imagenet_aig101_t$t; done
  python -m adanet_jax.main --config=configs/imagenet.py:resnet50,gated=false \
      --workdir=workdirs/imagenet_resnet50       # gates-off baselines
  python -m adanet_jax.main --config=configs/imagenet.py:resnet101,gated=false \
      --workdir=workdirs/imagenet_resnet101
  python -m adanet_jax.tools.summary --config=configs/imagenet.py:resnet101,t=0.3

Recipe (reference train_img.py): SGD, momentum 0.9, LR 0.1 at batch 256
(scaled linearly with train.batch_size), x0.1 every 30 epochs, 100 epochs
(500,400 steps of 256), weight decay 1e-4 coupled L2 on every parameter,
target-rate loss weight 1 averaged over all blocks (target-1 blocks are fixed
on and contribute nothing); random-resized crop 224 + flip, evaluation resize
256 + centre crop 224, ImageNet mean/std. Evaluation every epoch on all
50,000 validation images with deterministic gates.

Hardware and time: GPUs or a TPU slice, and enough CPU cores to decode
JPEGs as fast as the accelerators train. A step computes every block (the
gates multiply by 0 or 1), so it costs what a plain ResNet's step costs. The
train step alone (experiments/benchmark_step.py, batch 256, one H200, JAX
0.11.2) ran at 3,080 images/s (ResNet-50, float32), 5,800 (ResNet-50,
bfloat16) and 3,630 (ResNet-101, bfloat16): 100 epochs (128 M images) take
about 11.5 h, 6.1 h and 9.8 h on one such GPU if the input keeps up. It
usually does not: the random-resized-crop pipeline decoded 570 images/s on
this project's 2 CPU cores (`experiments/results/input_benchmark.txt`,
synthetic 500x375 JPEGs), about 285 per core, so 5,800 images/s need about
20 cores per GPU; with fewer cores the run takes images / (cores x 285) s.
`--config.model.dtype=bfloat16` (float32 parameters, loss and BatchNorm
statistics) is the fast setting. `train.batch_size` and `eval.batch_size`
must be multiples of the device count; on several hosts each process reads
its own part of the data.

Initialisation: as the reference model, the block and stem BatchNorm gammas
start at 1 and the gates' BatchNorm gammas U(0, 1) (PyTorch 0.3.1's default,
which the reference left in place there; `model.bn_gamma_init='reference'`).
`--config.init_from=resnet50.pth` starts from a torchvision ResNet state_dict
(gates fresh), as the reference's `--pretrained`.

Per-layer targets (reference README): ResNet-50
[1, 1, 0.8, 1, t, t, t, 1, t, t, t, t, t, 1, 0.7, 1]; ResNet-101 1 on the
first 8 blocks and t on the other 25; ResNet-152 (not in the paper) t
everywhere. Blocks with target 1 always execute (gates.fix_target_one).

Compare with the paper (Fig. 3), top-1 error: ConvNet-AIG 50 at t =
0.4/0.5/0.6/0.7 24.7 / 24.4 / 24.2 / 23.8% at 2.56 / 2.71 / 2.88 / 3.06
GFLOPs; ConvNet-AIG 101 at t = 0.3/0.5 23.0 / 22.6% at 4.34 / 5.11 GFLOPs;
ResNet-50 23.9%, ResNet-101 22.6% (the `paper_gflops` metric uses the
paper's convention). Users of the reference code reported 24.6-25.3% for
ConvNet-AIG 50 at t = 0.7.
"""

from adanet_jax import config_lib
from adanet_jax.errors import ConfigError

_ARCHS = {
    'resnet50': (50, 'resnet50_reference', 0.6),
    'resnet101': (101, 'resnet101_reference', 0.5),
    'resnet152': (152, 'uniform', 0.5),
}
# x0.1 every 30 epochs of 100: at 30%, 60% and 90% of the training, whatever its length.
DECAY_FRACTIONS = (0.3, 0.6, 0.9)


def get_config(arg=None):
  args = config_lib.parse_arg(
      arg, positional='arch', arch='resnet50', t=-1.0, gated=True, epochs=100.0
  )
  if args.arch not in _ARCHS:
    raise ConfigError(
        f'config argument arch={args.arch!r} is unknown; allowed: '
        f'{", ".join(_ARCHS)}'
    )
  depth, schedule, default_t = _ARCHS[args.arch]
  config = config_lib.get_base_config()
  config.model.name = 'imagenet_resnet'
  config.model.depth = depth
  config.model.gated = args.gated
  config.model.num_classes = 1000
  config.model.bn_gamma_init = (
      'reference'  # gates' BatchNorm gammas U(0, 1), as the reference
  )
  config.data.name = 'imagenet2012'
  config.data.image_size = 224
  config.data.channels = 3
  config.loss.target = default_t if args.t < 0 else args.t
  config.loss.target_schedule = schedule
  config.loss.weight = 1.0
  config.loss.reduction = 'mean'
  config.optim.base_learning_rate = 0.1
  config.optim.base_batch_size = 256
  config.optim.momentum = 0.9
  config.optim.nesterov = False
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'step'
  config.optim.decay_fractions = DECAY_FRACTIONS
  config.optim.decay_factor = 0.1
  config.train.batch_size = 256
  config.train.num_epochs = args.epochs
  config.train.eval_every_epochs = 1.0
  config.train.log_every_steps = 500
  config.eval.batch_size = (
      1024  # divides over 2^k devices; the last batch is padded
  )
  config.checkpoint.every_steps = 5000
  config.lock()
  return config
