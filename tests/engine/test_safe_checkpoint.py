"""Checkpoints: weights_only loading of mmengine's objects, clear errors, atomic writes, the
newest complete checkpoint of a work dir, checkpoints that do not fit the model."""
import argparse
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import _load_checkpoint
from torch import nn

from mmseg_custom.engine import (AtomicLocalBackend, CheckpointError,
                                 allow_mmengine_checkpoint_globals, latest_checkpoint,
                                 load_from_local, load_state_dict_exactly,
                                 remove_unfinished_writes)


def mmengine_style_checkpoint():
    """What ``Runner.save_checkpoint`` writes: tensors plus numpy values and HistoryBuffers."""
    hub = MessageHub.get_instance('test_safe_checkpoint')
    for value in (1.5, np.float64(0.25), np.float32(3.0), np.int64(2)):
        hub.update_scalar('train/loss', value)
    hub.update_info('keep_ckpt_ids', [2, 4])
    meta = dict(iter=4, seed=2023, dataset_meta=dict(classes=('a', 'b'), palette=[[0, 0, 0]]),
                scale=np.float32(0.5), index=np.arange(3))
    return dict(meta=meta, state_dict={'w': torch.arange(4.0)}, message_hub=hub.state_dict())


def test_mmengine_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / 'iter_4.pth'
    torch.save(mmengine_style_checkpoint(), path)
    # mmengine's own loader and plain torch.load read it inside the context manager; outside
    # it they keep torch's allow-list (tests/engine/test_import_side_effects.py).
    with allow_mmengine_checkpoint_globals():
        loaded = (_load_checkpoint(str(path), map_location='cpu'),
                  torch.load(path, weights_only=True))
    for ckpt in (load_from_local(str(path), map_location='cpu'), *loaded):
        buffer = ckpt['message_hub']['log_scalars']['train/loss']
        assert isinstance(buffer, HistoryBuffer)
        assert buffer.mean() == pytest.approx((1.5 + 0.25 + 3.0 + 2) / 4)
        assert buffer.statistics('current') == 2
        assert ckpt['meta']['index'].tolist() == [0, 1, 2]
        assert torch.equal(ckpt['state_dict']['w'], torch.arange(4.0))


@pytest.mark.parametrize('keep', [10, 0.5, -5])
def test_truncated_checkpoint_error_names_the_file(tmp_path, keep):
    path = tmp_path / 'iter_4.pth'
    torch.save(mmengine_style_checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
    message = re.escape(f'Checkpoint {path} is corrupt or truncated')
    with pytest.raises(CheckpointError, match=message):
        load_from_local(str(path))


def test_empty_checkpoint_says_so(tmp_path):
    path = tmp_path / 'iter_4.pth'
    path.write_bytes(b'')
    with pytest.raises(CheckpointError, match=re.escape(f'Checkpoint {path} is empty (0 bytes)')):
        load_from_local(str(path))


def test_legacy_format_with_tensors_only_loads(tmp_path):
    """weights_only reads torch's legacy (non-zip) format safely: such a file is accepted."""
    path = tmp_path / 'old.pth'
    torch.save({'state_dict': {'w': torch.arange(3.0)}}, path, _use_new_zipfile_serialization=False)
    assert load_from_local(str(path))['state_dict']['w'].tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize('kind', ['legacy', 'pickle'])
def test_unsafe_files_are_refused_as_such_with_the_conversion(tmp_path, kind):
    """A legacy-format file holding objects weights_only refuses, and a plain pickle: refused as
    not a safe format (not as corrupt), with a conversion that works on a trusted file."""
    path = tmp_path / 'old.pth'
    if kind == 'legacy':
        torch.save({'state_dict': {'w': torch.arange(3.0)}, 'args': argparse.Namespace(lr=1)},
                   path, _use_new_zipfile_serialization=False)
    else:
        with open(path, 'wb') as f:
            pickle.dump({'state_dict': {'w': [0.0, 1.0, 2.0]}}, f)
    with pytest.raises(CheckpointError) as info:
        load_from_local(str(path))
    message = str(info.value)
    assert f'Checkpoint {path} is refused: it is not in a safe format' in message
    assert ("PyTorch's legacy (non-zip) format" if kind == 'legacy' else 'a plain pickle') \
        in message
    assert 'corrupt' not in message
    command = re.search(r'python -c "(.*)"', message).group(1)
    command = command.replace('IN.pth', str(path)).replace('OUT.pth', str(tmp_path / 'new.pth'))
    subprocess.run([sys.executable, '-c', command], check=True)
    converted = load_from_local(str(tmp_path / 'new.pth'))
    assert list(converted['state_dict']['w']) == [0.0, 1.0, 2.0]


@pytest.mark.parametrize('where', ['data.pkl', 'data/0'])
def test_corrupt_byte_is_found_by_its_crc(tmp_path, where):
    """A flipped byte in the pickle or in a tensor; torch itself may load either silently."""
    path = tmp_path / 'iter_4.pth'
    torch.save(mmengine_style_checkpoint(), path)
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(where))
    data = bytearray(path.read_bytes())
    # A member's local header: 30 bytes, then its name and extra field, then its bytes.
    start = info.header_offset
    name_len, extra_len = struct.unpack('<HH', data[start + 26:start + 30])
    data[start + 30 + name_len + extra_len + 2] ^= 0xFF
    path.write_bytes(bytes(data))
    message = f'corrupt or truncated: member .*{where} fails its CRC'
    with pytest.raises(CheckpointError, match=message):
        load_from_local(str(path))


def test_missing_checkpoint_is_named(tmp_path):
    message = re.escape(f'Checkpoint {tmp_path}/nope.pth does not exist')
    with pytest.raises(FileNotFoundError, match=message):
        load_from_local(str(tmp_path / 'nope.pth'))


def test_importing_the_package_registers_our_loader_for_local_files_only():
    """mmengine's local scheme becomes our loader (so init_model reads our checkpoints on torch
    >= 2.6, CRC-checked); every other scheme (http, open-mmlab, s3...) stays mmengine's."""
    code = ('from mmengine.runner.checkpoint import CheckpointLoader; '
            'before = dict(CheckpointLoader._schemes); import mmseg_custom; '
            'after = CheckpointLoader._schemes; '
            'print(sorted(after) == sorted(before), '
            'all(after[k] is v for k, v in before.items() if k != ""), '
            'after[""].__module__, after[""].__name__)')
    out = subprocess.run([sys.executable, '-c', code], check=True, stdout=subprocess.PIPE,
                         text=True).stdout.split()
    assert out == ['True', 'True', 'mmseg_custom.engine.checkpoint', 'load_for_mmengine']


class MakeDir:
    """Pickles as a call to ``os.mkdir``: code a checkpoint must never run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path, )


class ReadAttribute:
    """Pickles as ``getattr(HistoryBuffer, '__init__')``, beyond HistoryBuffer's statistics."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


@pytest.mark.parametrize('payload', ['code', 'getattr'])
def test_code_in_a_checkpoint_is_refused(tmp_path, payload):
    marker = tmp_path / 'ran'
    path = tmp_path / 'evil.pth'
    torch.save({'x': MakeDir(str(marker)) if payload == 'code' else ReadAttribute()}, path)
    message = re.escape(f'Checkpoint {path} holds Python objects')
    with pytest.raises(CheckpointError, match=message):
        load_from_local(str(path))
    assert not marker.exists()


def test_atomic_put_replaces_the_file_or_leaves_it_alone(tmp_path, monkeypatch):
    backend = AtomicLocalBackend()
    path = tmp_path / 'sub' / 'iter_2.pth'
    backend.put(b'first', path)
    backend.put(b'second', path)
    assert path.read_bytes() == b'second'

    def killed(fd):
        raise KeyboardInterrupt  # the job is stopped after writing, before the rename

    monkeypatch.setattr(os, 'fsync', killed)
    with pytest.raises(KeyboardInterrupt):
        backend.put(b'third, never complete', path)
    assert path.read_bytes() == b'second'
    assert os.listdir(path.parent) == ['iter_2.pth']


def save(path, step=None):
    torch.save({'meta': {'iter': step}, 'state_dict': {'w': torch.zeros(2)}}, path)
    return str(path)


def test_latest_checkpoint_is_the_newest_complete_one(tmp_path):
    assert latest_checkpoint(str(tmp_path)) == (None, f'no checkpoint in {tmp_path}')
    old = save(tmp_path / 'iter_2.pth')
    (tmp_path / 'last_checkpoint').write_text(old)
    assert latest_checkpoint(str(tmp_path))[0] == old
    # Killed after the new checkpoint was renamed, before last_checkpoint was updated.
    new = save(tmp_path / 'iter_4.pth')
    path, note = latest_checkpoint(str(tmp_path))
    assert path == new and 'names' in note and 'older' in note
    # A newer one cut off, and the temporary file of an unfinished write: both ignored.
    (tmp_path / 'iter_6.pth').write_bytes((tmp_path / 'iter_4.pth').read_bytes()[:100])
    (tmp_path / 'iter_8.pth.tmp.123').write_bytes(b'partial')
    assert latest_checkpoint(str(tmp_path))[0] == new
    # last_checkpoint names a file deleted since.
    os.remove(new)
    (tmp_path / 'last_checkpoint').write_text(new)
    assert latest_checkpoint(str(tmp_path))[0] == old
    (tmp_path / 'last_checkpoint').write_text('')  # cut off while written
    assert latest_checkpoint(str(tmp_path))[0] == old
    assert remove_unfinished_writes(str(tmp_path)) == [str(tmp_path / 'iter_8.pth.tmp.123')]
    assert sorted(os.listdir(tmp_path)) == ['iter_2.pth', 'iter_6.pth', 'last_checkpoint']


class Net(nn.Module):

    def __init__(self, classes):
        super().__init__()
        self.body = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, classes, 1)


def test_a_checkpoint_that_does_not_fit_names_both_shapes():
    checkpoint = {'state_dict': {f'module.{k}': v for k, v in Net(6).state_dict().items()}}
    model = Net(10)
    with pytest.raises(CheckpointError) as info:
        load_state_dict_exactly(model, checkpoint, 'six.pth')
    message = str(info.value)
    assert message.startswith('Checkpoint six.pth does not fit the model')
    assert 'size mismatch for head.weight' in message
    assert 'torch.Size([6, 4, 1, 1])' in message and 'torch.Size([10, 4, 1, 1])' in message
    assert 'num_classes' in message

    state = Net(10).state_dict()
    del state['head.bias']
    state['extra.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointError, match='missing from the checkpoint: head.bias') as info:
        load_state_dict_exactly(Net(10), state, 'other.pth')
    assert 'not in the model: extra.weight' in str(info.value)

    fits = Net(10)
    state = fits.state_dict()
    del state['bn.num_batches_tracked']  # older BN layers had none: not a misfit
    load_state_dict_exactly(Net(10), state, 'ok.pth')
