"""Weights files (.pth zip, .safetensors) are checked as checkpoints are: a damaged, cut-off or
empty file is an error that names the file, the problem and the fix, never wrong weights."""
import re
import struct
import zipfile

import pytest
import torch
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401
from mmseg_custom.engine import CheckpointError
from mmseg_custom.models.weights import read_state_dict


def conv_weights():
    torch.manual_seed(0)
    return {'patch_embed.proj.weight': torch.randn(8, 3, 4, 4), 'cls_token': torch.randn(1, 1, 8)}


def flip_byte_in_member(path, member_suffix, offset=2):
    """Flip one byte inside a member of torch's zip archive (its CRC no longer matches)."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(member_suffix))
    data = bytearray(path.read_bytes())
    # A member's local header: 30 bytes, then its name and extra field, then its bytes.
    start = info.header_offset
    name_len, extra_len = struct.unpack('<HH', data[start + 26:start + 30])
    data[start + 30 + name_len + extra_len + offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_tensor_byte_in_a_pth_is_refused_not_loaded(tmp_path):
    """torch.load reads the damaged tensor without a word (the weight is simply wrong)."""
    path = tmp_path / 'dinov2_weights.pth'
    weights = conv_weights()
    torch.save(weights, path)
    flip_byte_in_member(path, 'data/0', offset=3)  # the high byte of the first float
    loaded = torch.load(path, weights_only=True)  # what read_state_dict used to return
    assert not torch.equal(loaded['patch_embed.proj.weight'], weights['patch_embed.proj.weight'])
    with pytest.raises(CheckpointError) as info:
        read_state_dict(str(path))
    message = str(info.value)
    assert message.startswith(f'Weights file {path} is corrupt or truncated: member ')
    assert 'data/0 fails its CRC check' in message and 'download or copy it again' in message


def test_intact_files_load_as_saved(tmp_path):
    from safetensors.torch import save_file
    weights = conv_weights()
    torch.save({'state_dict': weights, 'meta': {'step': 3}}, tmp_path / 'w.pth')
    save_file(weights, str(tmp_path / 'w.safetensors'))
    for name in ('w.pth', 'w.safetensors'):
        loaded = read_state_dict(str(tmp_path / name))
        assert set(loaded) == set(weights), name
        assert all(torch.equal(loaded[k], v) for k, v in weights.items()), name


@pytest.mark.parametrize('keep', [0, 5, 0.5])
def test_empty_or_cut_safetensors_names_the_file(tmp_path, keep):
    """safetensors raised HeaderTooSmall / MetadataIncompleteBuffer, naming no file."""
    from safetensors.torch import save_file
    path = tmp_path / 'model.safetensors'
    save_file(conv_weights(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(CheckpointError) as info:
        read_state_dict(str(path))
    message = str(info.value)
    problem = 'is empty (0 bytes)' if keep == 0 else 'is corrupt or truncated'
    assert message.startswith(f'Weights file {path} {problem}'), message
    assert 'download or copy it again' in message


def test_damaged_safetensors_header_names_the_file(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / 'model.safetensors'
    save_file(conv_weights(), str(path))
    data = bytearray(path.read_bytes())
    data[8] ^= 0xFF  # the first byte of the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=re.escape(f'Weights file {path} is corrupt')):
        read_state_dict(str(path))


def test_dinov2_weights_and_policy_files_say_what_they_are(tmp_path):
    from mmseg_custom.models.weights import load_dinov2_weights
    path = tmp_path / 'dinov2.pth'
    torch.save(conv_weights(), path)
    flip_byte_in_member(path, 'data/1')
    with pytest.raises(CheckpointError, match=re.escape(f'DINOv2 weights file {path} is corrupt')):
        load_dinov2_weights(str(path))
    policy = MODELS.build(dict(type='CTSPolicyNet'))
    path = tmp_path / 'policy.pth'
    torch.save(dict(state_dict=policy.state_dict()), path)
    flip_byte_in_member(path, 'data/0')
    damaged = MODELS.build(dict(type='CTSPolicyNet', pretrained=str(path)))
    with pytest.raises(CheckpointError) as info:
        damaged.init_weights()
    message = str(info.value)
    assert message.startswith(f'CTS policy file {path} is corrupt or truncated')
    assert 'tools/train_cts_policy.py' in message


def test_damaged_model_folder_config_names_the_file(tmp_path):
    from mmseg_custom.models.timm_weights import read_weights
    (tmp_path / 'config.json').write_text('{"model_type": "dinov3_vit", "hidden_si')
    with pytest.raises(ValueError, match=re.escape(f'{tmp_path / "config.json"} is not valid '
                                                   'JSON')):
        read_weights(str(tmp_path))
