"""Checkpoints: weights_only loading of mmengine's objects, clear errors, atomic writes."""
import os
import re
import struct
import zipfile

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import _load_checkpoint

from mmseg_custom.engine import AtomicLocalBackend, CheckpointError


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
    for ckpt in (_load_checkpoint(str(path), map_location='cpu'),
                 torch.load(path, weights_only=True)):  # plain torch.load is covered too
        buffer = ckpt['message_hub']['log_scalars']['train/loss']
        assert isinstance(buffer, HistoryBuffer)
        assert buffer.mean() == pytest.approx((1.5 + 0.25 + 3.0 + 2) / 4)
        assert buffer.statistics('current') == 2
        assert ckpt['meta']['index'].tolist() == [0, 1, 2]
        assert torch.equal(ckpt['state_dict']['w'], torch.arange(4.0))


@pytest.mark.parametrize('keep', [0, 10, 0.5, -5])
def test_truncated_checkpoint_error_names_the_file(tmp_path, keep):
    path = tmp_path / 'iter_4.pth'
    torch.save(mmengine_style_checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
    message = re.escape(f'Checkpoint {path} is corrupt or truncated')
    with pytest.raises(CheckpointError, match=message):
        _load_checkpoint(str(path))


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
        _load_checkpoint(str(path))


def test_missing_checkpoint_is_named(tmp_path):
    message = re.escape(f'Checkpoint {tmp_path}/nope.pth does not exist')
    with pytest.raises(FileNotFoundError, match=message):
        _load_checkpoint(str(tmp_path / 'nope.pth'))


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
        _load_checkpoint(str(path))
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
