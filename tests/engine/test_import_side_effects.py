"""Importing mmseg_custom changes nothing process-wide that other code relies on: torch's
weights_only allow-list stays torch's, a reload does not raise, and the Runner's checkpoint loading
uses mmengine's public API only."""
import ast
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from torch import nn

import mmseg_custom  # noqa: F401
from mmseg_custom.engine import (PortableRunner, allow_mmengine_checkpoint_globals,
                                 load_from_local)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class Statistic:
    """Pickles as ``getattr(HistoryBuffer, 'mean')``, as a HistoryBuffer's state does."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, 'mean')


def test_weights_only_elsewhere_keeps_torchs_allow_list(tmp_path):
    path = tmp_path / 'hub.pth'
    buffer = HistoryBuffer()
    buffer.update(2.0)
    torch.save({'w': torch.ones(2), 'buffer': buffer, 'statistic': Statistic()}, path)
    # Stock torch refuses getattr and mmengine's classes; so it does after importing us.
    with pytest.raises(pickle.UnpicklingError, match='builtins.getattr|HistoryBuffer'):
        torch.load(path, weights_only=True)
    before = torch.serialization.get_safe_globals()
    assert load_from_local(str(path))['buffer'].mean() == 2.0  # our loader reads it
    with allow_mmengine_checkpoint_globals():  # and so does any loader inside the context
        assert torch.load(path, weights_only=True)['statistic'] == HistoryBuffer.mean
    assert torch.serialization.get_safe_globals() == before
    with pytest.raises(pickle.UnpicklingError, match='builtins.getattr|HistoryBuffer'):
        torch.load(path, weights_only=True)


def test_a_callers_own_allow_list_survives_our_loader(tmp_path):
    path = tmp_path / 'w.pth'
    torch.save({'w': torch.ones(1)}, path)
    with torch.serialization.safe_globals([HistoryBuffer]):
        load_from_local(str(path))
        assert HistoryBuffer in torch.serialization.get_safe_globals()


def test_import_leaves_torch_alone_and_the_checkpoint_module_reloads():
    # torch adds its own classes (DTensor...) when its submodules load: those are not ours.
    code = '\n'.join([
        'import importlib, torch',
        'def allowed():',
        '    return {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"',
        '            for g in torch.serialization.get_safe_globals()}',
        'before = allowed()',
        'import mmseg_custom',
        'import mmseg_custom.engine.checkpoint as c',
        'print(sorted(n for n in allowed() - before if not n.startswith("torch.")))',
        'importlib.reload(c)',
        'from mmengine.fileio import get_file_backend',
        "b = get_file_backend('x', backend_args=dict(backend=c.ATOMIC_BACKEND))",
        'print(type(b) is c.AtomicLocalBackend)'])
    proc = subprocess.run([sys.executable, '-c', code], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ['[]', 'True']


def test_engine_imports_no_private_mmengine_name():
    for name in ('runner.py', 'checkpoint.py', 'optim_constructor.py',
                 'peft_optim_constructor.py'):
        tree = ast.parse(open(osp.join(REPO, 'mmseg_custom', 'engine', name)).read())
        private = [f'{node.module}.{a.name}' for node in ast.walk(tree)
                   if isinstance(node, ast.ImportFrom)
                   and (node.module or '').startswith('mmengine')
                   for a in node.names if a.name.startswith('_')]
        assert private == [], name


class Net(BaseModel):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.bn(self.conv(inputs))


def test_fine_tuning_load_revises_keys_and_loads_what_fits(tmp_path):
    """``load_from`` for fine-tuning: ``module.`` prefixes removed, fitting weights loaded, the
    rest reported (mmengine's behaviour, through its public ``load_state_dict``)."""
    source = Net()
    nn.init.normal_(source.conv.weight)
    state = {f'module.{k}': v for k, v in source.state_dict().items()}
    state['module.extra.weight'] = torch.zeros(1)
    path = tmp_path / 'pretrained.pth'
    torch.save({'state_dict': state}, path)
    runner = PortableRunner(model=Net(), work_dir=str(tmp_path / 'work'),
                            default_scope='mmseg')
    runner.load_checkpoint(str(path))
    assert torch.equal(runner.model.conv.weight, source.conv.weight)
    assert torch.equal(runner.model.bn.running_var, source.bn.running_var)


def test_mmengine_load_checkpoint_reads_our_checkpoints_and_files_without_meta(tmp_path):
    """init_model's path (mmengine's load_checkpoint) reads a training checkpoint with a message
    hub on torch >= 2.6 through our loader, and a bare state dict gets the meta init_model reads;
    a damaged file is one clear error there too."""
    from mmengine.runner.checkpoint import CheckpointLoader, load_checkpoint
    from mmseg_custom.engine import CheckpointError
    model = nn.Linear(2, 2)
    buffer = HistoryBuffer()
    buffer.update(1.0)
    path = tmp_path / 'iter_1.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'iter': 1},
                'message_hub': {'log_scalars': {'loss': buffer}}}, path)
    assert load_checkpoint(nn.Linear(2, 2), str(path))['meta'] == {'iter': 1}
    bare = tmp_path / 'bare.pth'
    torch.save(model.state_dict(), bare)
    other = nn.Linear(2, 2)
    ckpt = CheckpointLoader.load_checkpoint(str(bare))
    assert ckpt['meta'] == {} and set(ckpt['state_dict']) == {'weight', 'bias'}
    load_checkpoint(other, str(bare))
    torch.testing.assert_close(other.weight, model.weight)
    damaged = tmp_path / 'damaged.pth'
    damaged.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match='damaged.pth'):
        load_checkpoint(nn.Linear(2, 2), str(damaged))
