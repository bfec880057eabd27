"""The gated ResNets in PyTorch, with the reference ConvNet-AIG state_dict layout.

  from adanet_jax import torch_model
  net = torch_model.from_file('model.pth')        # written by tools.export_torch
  logits, aux = net(images_nchw)                   # eval mode: deterministic gates
  aux['gates'], aux['probs']                       # (B, blocks)
  aux['logits']                                    # (B, blocks, 2), before noise

This is the one module of the package that needs torch (`pip install
adanet_jax[torch]`); it imports torch at its top and nothing else in the
package imports it. Input is NCHW, preprocessed as `adanet_jax.load(...)`'s
`predict` takes it.

The `state_dict` keys follow the reference model (`convnet_aig.py`):
`conv1`, `bn1` (stem), `layer{s}.{i}.conv{1,2,3}`, `.bn{1,2,3}`,
`.shortcut.0` (1x1 conv) and `.shortcut.1` (its BatchNorm) where the shape
changes, the gate `.fc1` (1x1 conv, with bias), `.fc1bn`, `.fc2`, and
`linear`, so the authors' classes load our exports and these classes load
the authors' checkpoints, both with `load_state_dict(strict=True)`. The wide
family has no reference model; its layout is ours: pre-activation blocks
`layer{s}.{i}.bn1`, `.conv1`, `.bn2`, `.conv2`, `.shortcut.0` (1x1 conv, no
BatchNorm) and the final `bn_final` before the pool.

The gate is the straight-through Gumbel-softmax of the reference: forward
value 1[l1 + g1 > l0 + g0], gradient that of softmax(l + g)[1] (temperature
1, as the reference ignores its argument). `gate_mode` picks it per call
(default: 'sample' in train mode, 'deterministic' in eval mode); `noise`
(B, blocks, 2) is the Gumbel noise of mode 'sample' (drawn here if None).
Blocks listed as fixed (`gates.fix_target_one`) always run (z = prob = 1,
logits (0, inf)), as adanet_jax's fixed blocks; the authors' model has none,
so their checkpoints are read with `gates.fix_target_one=False` (README,
"PyTorch weights in and out"). `net.double()` gives the float64 model.
"""

import ml_collections
import torch
from torch import nn
import torch.nn.functional as F

from adanet_jax.errors import ConfigError
from adanet_jax.model import factory, torch_io
from adanet_jax.model.gate import check_gate_mode


def _gate_forward(block, x, gate_mode, noise):
  """The block's gate: pool -> fc1 (1x1 conv) -> fc1bn -> ReLU -> fc2 -> two logits.

  Returns (z, prob, logits) of shapes (B,), (B,), (B, 2).
  """
  pooled = x.mean(dim=(2, 3), keepdim=True)
  h = F.relu(block.fc1bn(block.fc1(pooled).flatten(1)))
  logits = block.fc2(h[:, :, None, None]).flatten(1)
  prob = torch.sigmoid(logits[:, 1] - logits[:, 0])
  if gate_mode == 'expected':
    return prob, prob, logits
  perturbed = logits if gate_mode == 'deterministic' else logits + noise
  soft = torch.softmax(perturbed, dim=1)[:, 1]
  hard = (perturbed[:, 1] > perturbed[:, 0]).to(soft.dtype)
  return soft + (hard - soft).detach(), prob, logits


class _Block(nn.Module):
  """Shared gate handling. The gate's layers live in the block itself, as in
  the reference (`layer1.0.fc1.weight`)."""

  def _add_gate(self, channels, gated, hidden):
    self.gated = gated
    if gated:
      self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
      self.fc1bn = nn.BatchNorm1d(hidden)
      self.fc2 = nn.Conv2d(hidden, 2, 1, bias=True)
      nn.init.normal_(self.fc2.weight, 0.0, 1e-3)
      with torch.no_grad():
        self.fc2.bias.copy_(torch.tensor([0.1, 2.0]))

  def _gate(self, x, gate_mode, noise, fixed):
    if fixed or not self.gated:
      ones = x.new_ones(x.shape[0])
      always = torch.stack(
          [x.new_zeros(x.shape[0]), x.new_full((x.shape[0],), float('inf'))], 1
      )
      return ones, ones, always
    return _gate_forward(self, x, gate_mode, noise)


def _bn(channels):
  return nn.BatchNorm2d(channels)


class BasicBlock(_Block):
  """relu(shortcut(x) + z * bn2(conv2(relu(bn1(conv1(x))))))."""

  def __init__(self, cin, width, stride, gated, hidden):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
    self.bn1 = _bn(width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn2 = _bn(width)
    self.shortcut = nn.Sequential()
    if stride != 1 or cin != width:
      self.shortcut = nn.Sequential(
          nn.Conv2d(cin, width, 1, stride, bias=False), _bn(width)
      )
    self._add_gate(cin, gated, hidden)
    self.out_channels = width

  def forward(self, x, gate_mode, noise, fixed):
    z, prob, logits = self._gate(x, gate_mode, noise, fixed)
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(self.shortcut(x) + y * z[:, None, None, None]), (
        z,
        prob,
        logits,
    )


class Bottleneck(_Block):
  """1x1, 3x3 (with the stride), 1x1 to 4x width; post-activation."""

  def __init__(self, cin, width, stride, gated, hidden):
    super().__init__()
    out = 4 * width
    self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
    self.bn1 = _bn(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
    self.bn2 = _bn(width)
    self.conv3 = nn.Conv2d(width, out, 1, bias=False)
    self.bn3 = _bn(out)
    self.shortcut = nn.Sequential()
    if stride != 1 or cin != out:
      self.shortcut = nn.Sequential(
          nn.Conv2d(cin, out, 1, stride, bias=False), _bn(out)
      )
    self._add_gate(cin, gated, hidden)
    self.out_channels = out

  def forward(self, x, gate_mode, noise, fixed):
    z, prob, logits = self._gate(x, gate_mode, noise, fixed)
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(self.shortcut(x) + y * z[:, None, None, None]), (
        z,
        prob,
        logits,
    )


class PreActBlock(_Block):
  """Wide-ResNet block: shortcut + z * conv2(relu(bn2(conv1(relu(bn1(x))))))."""

  def __init__(self, cin, width, stride, gated, hidden):
    super().__init__()
    self.bn1 = _bn(cin)
    self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
    self.bn2 = _bn(width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.shortcut = None
    if stride != 1 or cin != width:
      self.shortcut = nn.Sequential(
          nn.Conv2d(cin, width, 1, stride, bias=False)
      )
    self._add_gate(cin, gated, hidden)
    self.out_channels = width

  def forward(self, x, gate_mode, noise, fixed):
    z, prob, logits = self._gate(x, gate_mode, noise, fixed)
    pre = F.relu(self.bn1(x))
    y = self.conv2(F.relu(self.bn2(self.conv1(pre))))
    shortcut = x if self.shortcut is None else self.shortcut(pre)
    return shortcut + y * z[:, None, None, None], (z, prob, logits)


class ResNet(nn.Module):
  """A gated ResNet with the reference key layout.

  Args:
    block: 'basic', 'bottleneck' or 'preact'.
    stage_sizes, stage_widths: blocks and block widths per stage.
    stem: 'cifar', 'imagenet' or 'wrn' (as `adanet_jax.model.resnet.ResNet`).
    stem_width: channels of the stem conv.
    num_classes: classes of the head.
    in_channels: image channels.
    gated: gates on every block, or none.
    fixed_blocks: blocks that always run.
    hidden: gate hidden width.
  """

  def __init__(
      self,
      block,
      stage_sizes,
      stage_widths,
      stem,
      stem_width,
      num_classes,
      in_channels=3,
      gated=True,
      fixed_blocks=(),
      hidden=16,
  ):
    super().__init__()
    self.stem = stem
    self.fixed_blocks = frozenset(fixed_blocks)
    if stem == 'imagenet':
      self.conv1 = nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=False)
    else:
      self.conv1 = nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=False)
    if stem != 'wrn':
      self.bn1 = _bn(stem_width)
    block_class = {
        'basic': BasicBlock,
        'bottleneck': Bottleneck,
        'preact': PreActBlock,
    }[block]
    cin = stem_width
    for s, (size, width) in enumerate(zip(stage_sizes, stage_widths)):
      blocks = []
      for i in range(size):
        stride = 2 if (i == 0 and s > 0) else 1
        blocks.append(block_class(cin, width, stride, gated, hidden))
        cin = blocks[-1].out_channels
      setattr(self, f'layer{s + 1}', nn.Sequential(*blocks))
    self.num_stages = len(stage_sizes)
    if stem == 'wrn':
      self.bn_final = _bn(cin)
    self.linear = nn.Linear(cin, num_classes)

  def blocks(self):
    for s in range(self.num_stages):
      yield from getattr(self, f'layer{s + 1}')

  def forward(self, x, gate_mode=None, noise=None):
    """Returns (logits, aux) with aux['gates'], aux['probs'] (B, blocks), aux['logits'].

    Args:
      x: (B, C, H, W) images.
      gate_mode: 'sample', 'deterministic' or 'expected'; None: 'sample' in
        train mode, 'deterministic' in eval mode.
      noise: (B, blocks, 2) Gumbel noise of mode 'sample' (None: drawn here).
    """
    if gate_mode is None:
      gate_mode = 'sample' if self.training else 'deterministic'
    check_gate_mode(gate_mode)
    x = self.conv1(x)
    if self.stem != 'wrn':
      x = F.relu(self.bn1(x))
    if self.stem == 'imagenet':
      x = F.max_pool2d(x, 3, 2, 1)
    blocks = list(self.blocks())
    if gate_mode == 'sample' and noise is None:
      u = torch.rand(x.shape[0], len(blocks), 2, dtype=x.dtype, device=x.device)
      noise = -torch.log(-torch.log(u))
    if noise is not None:
      noise = torch.as_tensor(noise).to(x.dtype)
    outs = []
    for index, block in enumerate(blocks):
      block_noise = None if noise is None else noise[:, index]
      x, out = block(x, gate_mode, block_noise, index in self.fixed_blocks)
      outs.append(out)
    if self.stem == 'wrn':
      x = F.relu(self.bn_final(x))
    logits = self.linear(x.mean(dim=(2, 3)))
    zs, probs, gate_logits = zip(*outs)
    return logits, {
        'gates': torch.stack(zs, 1),
        'probs': torch.stack(probs, 1),
        'logits': torch.stack(gate_logits, 1),
    }


def from_config(config: ml_collections.ConfigDict) -> ResNet:
  """The network `adanet_jax.model.factory.create_model(config)` builds, in
  PyTorch (float32, fresh PyTorch init, train mode)."""
  factory.validate(config)
  m = config.model
  sizes = factory.stage_sizes(m)
  common = dict(
      num_classes=m.num_classes,
      in_channels=config.data.channels,
      gated=m.gated,
      fixed_blocks=factory.fixed_blocks(config),
      hidden=config.gates.hidden,
  )
  k = m.width
  if m.name == 'cifar_resnet':
    return ResNet(
        'basic', sizes, (16 * k, 32 * k, 64 * k), 'cifar', 16 * k, **common
    )
  if m.name == 'wide_resnet':
    return ResNet(
        'preact', sizes, (16 * k, 32 * k, 64 * k), 'wrn', 16, **common
    )
  return ResNet(
      'bottleneck',
      sizes,
      tuple(64 * k * 2**i for i in range(4)),
      'imagenet',
      64,
      **common,
  )


def from_file(
    path: str, config: ml_collections.ConfigDict | None = None
) -> ResNet:
  """The model in a PyTorch file, ready for inference.

  Args:
    path: a file written by `tools.export_torch` (it carries its config), or
      any other reference-layout state_dict, or a checkpoint holding one under
      'state_dict' (the authors' `checkpoint.pth.tar`), with `config`.
    config: the model's config; required for a file without one, used
      instead of the file's if given.

  Returns:
    The `ResNet`, float32 on the CPU, in eval mode: deterministic gates and
    BatchNorm running statistics, as `adanet_jax.load(path).predict`.

  Raises:
    ConfigError (one line): an unreadable file, a file without a config and
    no `config`, or tensors that do not fit the model (naming them).
  """
  stored = torch_io.read_file(path)
  config = torch_io.config_for(stored, config)
  net = from_config(config)
  wanted = net.state_dict()
  problems = torch_io.state_dict_problems(
      stored.state_dict,
      {k: tuple(v.shape) for k, v in wanted.items()},
      # PyTorch 0.3.1, which the reference pins, wrote none
      optional={k for k in wanted if k.endswith('.num_batches_tracked')},
  )
  if problems:
    raise ConfigError(
        f'{path}: the reference ConvNet-AIG state_dict does not fit the '
        f'model: {"; ".join(problems)}; nothing was loaded'
    )
  net.load_state_dict(
      {k: torch.from_numpy(v) for k, v in stored.state_dict.items()},
      strict=True,
  )
  return net.eval()
