"""Tests of adanet_jax.model.torch_io and adanet_jax.torch_model (the PyTorch
model, "the twin"): weights in and out, and the numerics of a training step.

CIFAR checks use ResNet-20 at 8x8 (the issue's ResNet-110 compiles for about
40 s per gate mode on the 2-core machine; `experiments/parity_torch.py` runs
ResNet-110), ImageNet checks ResNet-50 at 32x32, the wide family WRN-10-2.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    'torch', reason='torch is not installed (pip install torch==2.13.0)'
)

from conftest import fill, make_immutable, remount  # noqa: E402

from adanet_jax import config_lib, torch_model
from adanet_jax.errors import ConfigError, WorkdirWriteError  # noqa: E402
from adanet_jax.infer import inference  # noqa: E402
from adanet_jax.model import factory, torch_io
from adanet_jax.tools import export_torch  # noqa: E402
from adanet_jax.train import checkpoints, optim, steps
from adanet_jax.train import plan as plan_lib
from experiments import torch_twin  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(load_config, name, arg, size):
  config = load_config(name, arg)
  config.data.image_size = size
  config.gates.fix_target_one = False
  return config


def _template(model, size):
  return jax.eval_shape(
      lambda: model.init(
          jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False
      )
  )


def _twin_outputs(net, x, mode, noise=None):
  with torch.no_grad():
    logits, aux = net(
        torch.from_numpy(x.transpose(0, 3, 1, 2)),
        gate_mode=mode,
        noise=None if noise is None else torch.from_numpy(noise),
    )
  return logits.numpy(), {k: v.numpy() for k, v in aux.items()}


def _our_outputs(model, variables, x, mode, key=None):
  return jax.tree.map(
      np.asarray,
      model.apply(variables, x, train=False, gate_mode=mode, key=key),
  )


def _assert_same_outputs(ours, theirs):
  (logits, aux), (t_logits, t_aux) = ours, theirs
  np.testing.assert_allclose(logits, t_logits, rtol=0, atol=1e-5)
  np.testing.assert_allclose(aux['logits'], t_aux['logits'], rtol=0, atol=1e-5)
  np.testing.assert_array_equal(aux['gates'], t_aux['gates'])
  # decisions differ between images and blocks
  assert 0 < aux['gates'].mean() < 1


@pytest.mark.parametrize(
    'config_name,arg,size',
    [
        ('cifar10.py', 'depth=44', 8),  # runs of 6: scanned
        ('imagenet.py', 'resnet50', 32),
        ('wide_cifar10.py', 'depth=10,width=2', 8),
    ],
)
def test_twin_weights_and_export_give_same_outputs(
    load_config, config_name, arg, size
):
  config = _config(load_config, config_name, arg, size)
  model = factory.create_model(config)
  net = torch_twin.randomize_(torch_model.from_config(config), seed=1).eval()
  state_dict = {k: v.numpy() for k, v in net.state_dict().items()}
  variables = torch_io.import_state_dict(state_dict, _template(model, size))
  x = np.random.RandomState(0).randn(8, size, size, 3).astype(np.float32)
  # our gates draw from it; the twin gets the same noise
  key = jax.random.key(2)
  noise = torch_twin.gumbel_noise(key, 8, model.num_blocks)
  for mode, mode_key, mode_noise in (
      ('deterministic', None, None),
      ('sample', key, noise),
  ):
    ours = _our_outputs(model, variables, x, mode, mode_key)
    _assert_same_outputs(ours, _twin_outputs(net, x, mode, mode_noise))
  # Export: ours -> reference layout -> a fresh twin gives the same outputs.
  exported = torch_io.export_state_dict(variables, num_batches_tracked=7)
  assert set(exported) == set(net.state_dict())
  assert int(exported['layer1.0.fc1bn.num_batches_tracked']) == 7
  fresh = torch_model.from_config(config).eval()
  fresh.load_state_dict(exported, strict=True)
  for key, value in net.state_dict().items():
    if not key.endswith('num_batches_tracked'):
      assert torch.equal(fresh.state_dict()[key], value), key
  _assert_same_outputs(ours, _twin_outputs(fresh, x, 'sample', noise))


def test_training_step_matches_twin(load_config):
  config = _config(load_config, 'cifar10.py', 'depth=20', 8)
  model = factory.create_model(config)
  targets = factory.block_targets(config)
  net32 = torch_twin.randomize_(torch_model.from_config(config), seed=3).train()
  net64 = copy.deepcopy(net32).double()
  template = _template(model, 8)
  variables = torch_io.import_state_dict(
      {k: v.numpy() for k, v in net32.state_dict().items()}, template
  )
  rng = np.random.RandomState(4)
  x = rng.randn(32, 8, 8, 3).astype(np.float32)
  labels = rng.randint(0, 10, 32)
  key = jax.random.key(5)
  noise = torch_twin.gumbel_noise(key, 32, model.num_blocks)
  loss, _, batch_stats, grads = torch_twin.our_train_forward_backward(
      model, variables, x, labels, key, targets, 2.0
  )
  loss32, _ = torch_twin.twin_train_forward_backward(
      net32, x, labels, noise, targets, 2.0
  )
  torch_twin.twin_train_forward_backward(net64, x, labels, noise, targets, 2.0)
  assert abs(loss - loss32) < 1e-6
  exported = torch_io.export_state_dict(
      {'params': variables['params'], 'batch_stats': batch_stats}
  )
  stats = [k for k in exported if k.endswith(('running_mean', 'running_var'))]
  assert len(stats) == 2 * (1 + 9 * 2 + 2 + 9)  # stem, blocks, shortcuts, gates
  for key in stats:
    twin = net32.state_dict()[key].numpy()
    assert torch_twin.relative_error(exported[key].numpy(), twin) < 1e-5, key
  # Gate-path gradients: ours against float64 within 10x of the twin's own
  # float32 error against float64.
  grads = torch_io.export_state_dict(
      {'params': grads, 'batch_stats': batch_stats}
  )
  for suffix in ('fc1.weight', 'fc1bn.weight', 'fc2.weight'):
    keys = [k for k in grads if k.endswith(suffix)]
    ref = np.concatenate(
        [net64.get_parameter(k).grad.numpy().ravel() for k in keys]
    )
    twin = np.concatenate(
        [net32.get_parameter(k).grad.numpy().ravel() for k in keys]
    )
    mine = np.concatenate([grads[k].numpy().ravel() for k in keys])
    error, twin_error = torch_twin.relative_error(
        mine, ref
    ), torch_twin.relative_error(twin, ref)
    assert 0 < twin_error and error <= 10 * twin_error, (
        suffix,
        error,
        twin_error,
    )


TORCHVISION_STAGES = (3, 4, 6, 3)


def _torchvision_resnet50(rng):
  """A torchvision ResNet-50 state_dict, from torchvision's documented key names."""
  sd = {}

  def conv(name, cout, cin, k):
    sd[f'{name}.weight'] = rng.randn(cout, cin, k, k).astype(np.float32)

  def bn(name, c):
    sd[f'{name}.weight'] = rng.rand(c).astype(np.float32)
    sd[f'{name}.bias'] = rng.randn(c).astype(np.float32)
    sd[f'{name}.running_mean'] = rng.randn(c).astype(np.float32)
    sd[f'{name}.running_var'] = rng.rand(c).astype(np.float32) + 0.5
    sd[f'{name}.num_batches_tracked'] = np.array(100)

  conv('conv1', 64, 3, 7)
  bn('bn1', 64)
  cin = 64
  for s, blocks in enumerate(TORCHVISION_STAGES):
    width = 64 * 2**s
    for i in range(blocks):
      p = f'layer{s + 1}.{i}'
      conv(f'{p}.conv1', width, cin, 1)
      bn(f'{p}.bn1', width)
      conv(f'{p}.conv2', width, width, 3)
      bn(f'{p}.bn2', width)
      conv(f'{p}.conv3', 4 * width, width, 1)
      bn(f'{p}.bn3', 4 * width)
      if i == 0:
        conv(f'{p}.downsample.0', 4 * width, cin, 1)
        bn(f'{p}.downsample.1', 4 * width)
      cin = 4 * width
  sd['fc.weight'] = rng.randn(1000, 2048).astype(np.float32)
  sd['fc.bias'] = rng.randn(1000).astype(np.float32)
  return sd


def _save(state_dict, path):
  torch.save(
      {k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}, path
  )
  return str(path)


@pytest.fixture(scope='module')
def resnet50_template():
  """Shapes and dtypes of the gated ResNet-50's variables (at 32x32)."""
  config = config_lib.load_config(
      os.path.join(REPO, 'configs', 'imagenet.py') + ':resnet50'
  )
  config.data.image_size = 32
  return _template(factory.create_model(config), 32)


def test_torchvision_resnet50_initialises_gated_model(
    resnet50_template, tmp_path
):
  # A stand-in for the freshly initialised model: random values everywhere,
  # so that "gates kept" and "everything else replaced" are both visible.
  rng = np.random.RandomState(1)
  fresh = jax.tree.map(
      lambda s: jnp.asarray(rng.randn(*s.shape), s.dtype), resnet50_template
  )
  sd = _torchvision_resnet50(np.random.RandomState(0))
  path = _save(
      {f'module.{k}': v for k, v in sd.items()}, tmp_path / 'resnet50.pth'
  )
  loaded = torch_io.restore_variables(path, fresh)
  flat = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
  fresh_flat = dict(jax.tree_util.tree_flatten_with_path(fresh)[0])
  names = {
      'scale': 'weight',
      'bias': 'bias',
      'mean': 'running_mean',
      'var': 'running_var',
      'kernel': 'weight',
  }
  used, gates = set(), 0
  for keypath, value in flat.items():
    parts = [k.key for k in keypath]
    if 'gate' in parts:
      np.testing.assert_array_equal(value, fresh_flat[keypath])
      gates += 1
      continue
    key = _torchvision_name(parts[1:-1]) + '.' + names[parts[-1]]
    want = sd[key]
    if parts[-1] == 'kernel':
      want = want.transpose(2, 3, 1, 0) if want.ndim == 4 else want.T
    np.testing.assert_array_equal(value, want, err_msg=key)
    used.add(key)
  assert used == {k for k in sd if not k.endswith('num_batches_tracked')}
  assert gates == 16 * 8  # 16 gates: fc1, fc2 (kernel, bias), fc1_bn (4 leaves)


def _torchvision_name(modules):
  """Our module path -> torchvision's module name, written out for the test."""
  top = {'stem_conv': 'conv1', 'stem_bn': 'bn1', 'head': 'fc'}
  if len(modules) == 1:
    return top[modules[0]]
  stage, block = modules[0][len('stage') :].split('_block')
  inner = {'shortcut_conv': 'downsample.0', 'shortcut_bn': 'downsample.1'}.get(
      modules[1], modules[1]
  )
  return f'layer{stage}.{block}.{inner}'


@pytest.mark.parametrize(
    'change,message',
    [
        (
            lambda sd: sd.pop('layer2.1.bn2.running_var'),
            "missing 'layer2.1.bn2.running_var'",
        ),
        (
            lambda sd: sd.update(
                {'layer5.0.conv1.weight': np.zeros(1, np.float32)}
            ),
            "unexpected 'layer5.0.conv1.weight'",
        ),
        (
            lambda sd: sd.update(
                {'fc.weight': np.zeros((10, 2048), np.float32)}
            ),
            r"'fc.weight' has shape \(10, 2048\) in the file, the model needs \(1000, 2048\)",
        ),
    ],
)
def test_torchvision_mismatch_is_one_line(resnet50_template, change, message):
  sd = _torchvision_resnet50(np.random.RandomState(0))
  change(sd)
  with pytest.raises(ConfigError, match=message) as error:
    torch_io.import_state_dict(sd, resnet50_template, torchvision=True)
  assert '\n' not in str(error.value)
  assert str(error.value).startswith(
      'the torchvision ResNet state_dict does not fit the model: '
  )


def test_reference_layout_errors_name_the_tensor(load_config, tmp_path):
  config = _config(load_config, 'cifar10.py', 'depth=8', 8)
  net = torch_model.from_config(config)
  sd = {f'module.{k}': v.numpy() for k, v in net.state_dict().items()}
  sd['module.layer3.0.fc1.weight'] = np.zeros((16, 32, 3, 3), np.float32)
  path = _save(sd, tmp_path / 'aig.pth')
  template = jax.tree.map(
      jnp.zeros_like, _template(factory.create_model(config), 8)
  )
  with pytest.raises(ConfigError) as error:
    torch_io.restore_variables(path, template)
  assert str(error.value) == (
      f'{path}: the reference ConvNet-AIG state_dict does not fit the model: '
      "'layer3.0.fc1.weight' has shape (16, 32, 3, 3) in the file, the model needs "
      '(16, 32, 1, 1); nothing was loaded'
  )
  with pytest.raises(ConfigError, match='fits only the bottleneck ResNets'):
    torch_io.import_state_dict(
        {'fc.weight': np.zeros(1)}, template, torchvision=True
    )
  (tmp_path / 'bad.pth').write_text('not a torch file')
  with pytest.raises(
      ConfigError, match=r"^cannot read '.*bad.pth' as a PyTorch file: "
  ):
    torch_io.read_file(str(tmp_path / 'bad.pth'))


def _save_authors_checkpoint(net, path, legacy=False):
  """What the reference's training scripts save (PyTorch 0.3.1 wrote the
  legacy, pre-zip format)."""
  torch.save(
      {
          'epoch': 3,
          'best_prec1': 90.0,
          'state_dict': {f'module.{k}': v for k, v in net.state_dict().items()},
      },
      path,
      _use_new_zipfile_serialization=not legacy,
  )
  return str(path)


def test_torch_files_are_recognised_by_their_bytes(tmp_path):
  net = torch.nn.Linear(2, 2)
  zip_file = _save_authors_checkpoint(net, tmp_path / 'checkpoint.pth.tar')
  legacy = _save_authors_checkpoint(net, tmp_path / 'best', legacy=True)
  (tmp_path / 'text.pth').write_text('not a torch file')
  with zipfile.ZipFile(tmp_path / 'other.zip', 'w') as archive:
    archive.writestr('archive/data.txt', 'no pickle')
  (tmp_path / 'damaged.pth').write_bytes(open(zip_file, 'rb').read()[:100])
  (tmp_path / 'dir.pth').mkdir()
  found = {
      name: torch_io.is_torch_file(str(tmp_path / name))
      for name in (
          'checkpoint.pth.tar',
          'best',
          'text.pth',
          'other.zip',
          'damaged.pth',
          'dir.pth',
          'missing.pth',
      )
  }
  assert found == {
      'checkpoint.pth.tar': True,
      'best': True,
      'text.pth': False,
      'other.zip': False,
      'damaged.pth': True,  # reading it names the damage
      'dir.pth': False,
      'missing.pth': False,
  }
  assert set(torch_io.read_file(legacy).state_dict) == {'weight', 'bias'}


def test_init_from_load_and_export_command(load_config, tmp_path):
  # An authors' checkpoint (a dict holding the state_dict, legacy and zip
  # formats, named as their scripts name them) through config.init_from and
  # adanet_jax.load; then our workdir out through the export command and
  # back through torch_model.from_file and adanet_jax.load.
  config = _config(load_config, 'digits.py', 'depth=8', 8)
  config.loss.targets = (0.6, 1.0, 0.6)  # block 1 is fixed if fix_target_one
  net = torch_twin.randomize_(torch_model.from_config(config), seed=6).eval()
  path = _save_authors_checkpoint(net, tmp_path / 'checkpoint.pth.tar')
  best = _save_authors_checkpoint(
      net, tmp_path / 'model_best.pth.tar', legacy=True
  )
  x = np.random.RandomState(7).randn(4, 8, 8, 1).astype(np.float32)
  want = _twin_outputs(net, x, 'deterministic')
  assert want[1]['gates'][:, 1].min() == 0  # the authors' block 1 closes
  loaded = inference.load(path, config=config)
  prediction = loaded.predict(x)
  np.testing.assert_allclose(prediction.logits, want[0], rtol=0, atol=1e-5)
  np.testing.assert_array_equal(prediction.gates, want[1]['gates'])
  # the .pth route reads the same bytes to the same values
  same = str(tmp_path / 'aig.pth')
  shutil.copy(path, same)
  jax.tree.map(
      np.testing.assert_array_equal,
      torch_io.restore_variables(same, loaded.variables),
      loaded.variables,
  )
  message = (
      f'{best!r} is a PyTorch file without a config (the ones '
      'tools.export_torch writes hold theirs): pass config=, whose '
      'model.name, model.depth, model.width, model.num_classes, model.gated, '
      'data.channels, gates.hidden and gates.fix_target_one describe the '
      "network (the authors' checkpoints need gates.fix_target_one=False)"
  )
  for load in (inference.load, torch_model.from_file):
    with pytest.raises(ConfigError) as error:
      load(best)
    assert str(error.value) == message
  # The authors' gates have no fixed blocks: forcing block 1 on changes
  # their decisions and logits.
  fixed = copy.deepcopy(config)
  fixed.gates.fix_target_one = True
  forced = inference.load(path, config=fixed).predict(x)
  np.testing.assert_array_equal(forced.gates[:, 1], 1)
  assert np.abs(forced.logits - want[0]).max() > 1e-2
  zeros = jax.tree.map(jnp.zeros_like, loaded.variables)
  state = steps.TrainState.create(
      apply_fn=None,
      params=zeros['params'],
      batch_stats=zeros['batch_stats'],
      tx=optim.create_optimizer(plan_lib.make_plan(config, 1).optimizer)[0],
  )
  checkpoints.check_init_from(best)
  state = checkpoints.start_state(str(tmp_path / 'fresh'), state, best).replace(
      step=jnp.asarray(5)
  )
  jax.tree.map(
      np.testing.assert_array_equal,
      {'params': state.params, 'batch_stats': state.batch_stats},
      loaded.variables,
  )
  workdir = tmp_path / 'run'
  checkpointer = checkpoints.Checkpointer(str(workdir), config)
  checkpointer.save(5, state)
  checkpointer.close()
  (workdir / 'config.json').write_text(config.to_json_best_effort())
  run = lambda *args: subprocess.run(  # noqa: E731
      [sys.executable, '-m', 'adanet_jax.tools.export_torch', *args],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  out = tmp_path / 'out.pth'
  result = run(f'--workdir={workdir}', f'--output={out}')
  assert result.returncode == 0, result.stderr
  assert result.stdout + result.stderr == f'wrote {out} (step 5)\n'
  # The reference layout under 'state_dict', loaded strictly; the config
  # and the step beside it, as JSON values.
  exported = torch.load(out, weights_only=True)
  assert sorted(exported) == ['config', 'state_dict', 'step']
  assert exported['step'] == 5
  assert exported['config'] == json.loads(config.to_json_best_effort())
  twin = torch_model.from_config(config).eval()
  twin.load_state_dict(exported['state_dict'], strict=True)
  assert int(exported['state_dict']['bn1.num_batches_tracked']) == 5
  _assert_same_outputs(_twin_outputs(twin, x, 'deterministic'), want)
  # torch_model.from_file needs nothing but the file: eval mode,
  # deterministic gates, the outputs of adanet_jax.load(file).predict.
  module = torch_model.from_file(str(out))
  assert not module.training
  with torch.no_grad():
    logits, aux = module(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  reloaded = inference.load(str(out))
  assert reloaded.step == 5
  assert json.loads(reloaded.config.to_json_best_effort()) == exported['config']
  prediction = reloaded.predict(x)
  np.testing.assert_allclose(
      logits.numpy(), prediction.logits, rtol=0, atol=1e-5
  )
  np.testing.assert_array_equal(aux['gates'].numpy(), prediction.gates)
  with pytest.raises(ConfigError) as error:
    export_torch.export(str(workdir), str(tmp_path))
  assert (
      str(error.value)
      == f'--output={str(tmp_path)!r} is a directory; name a file'
  )
  result = run(
      f'--workdir={tmp_path / "none"}', f'--output={tmp_path / "x.pth"}'
  )
  assert result.returncode == 2
  assert result.stderr.strip() == (
      f"error: --workdir='{tmp_path / 'none'}' is not a workdir "
      'with checkpoints'
  )


@pytest.mark.parametrize(
    'fault,cause',
    [
        ('read-only', 'Read-only file system [errno 30]'),
        ('immutable', 'Operation not permitted [errno 1]'),
        ('full', 'No space left on device [errno 28]'),
    ],
)
def test_export_to_an_unwritable_target_is_one_line_and_leaves_nothing(
    gated_run, small_disk, fault, cause
):
  disk = small_disk('64k')
  output = disk / 'x.pth'
  {
      'read-only': lambda: remount(disk, 'ro'),
      'immutable': lambda: make_immutable(disk),
      'full': lambda: fill(disk),
  }[fault]()
  before = sorted(os.listdir(disk))
  with pytest.raises(WorkdirWriteError) as e:
    export_torch.export(gated_run, str(output))
  assert (
      str(e.value) == f'writing {output} failed ({cause}); nothing was exported'
  )
  assert sorted(os.listdir(disk)) == before  # no x.pth, no x.pth.tmp
