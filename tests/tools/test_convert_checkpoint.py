"""tools/convert_checkpoint.py: an original checkpoint converted; bad input, one clear message."""
import argparse
import importlib.util
import os.path as osp
import re

import pytest
import torch

from mmseg_custom.engine import load_from_local

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
spec = importlib.util.spec_from_file_location(
    'convert_checkpoint', osp.join(REPO, 'tools', 'convert_checkpoint.py'))
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def loader_message(path):
    """What the loader of train/test/image_demo says about ``path``."""
    with pytest.raises(Exception) as info:
        load_from_local(str(path))
    return f'{type(info.value).__name__}: {info.value}'


def test_converts_an_original_checkpoint(tmp_path):
    src, dst = tmp_path / 'original.pth', tmp_path / 'converted.pth'
    torch.save({'state_dict': {'backbone.split_head.0.norm1.weight': torch.ones(2),
                               'backbone.bn_norm.weight': torch.ones(2)},
                'meta': {'CLASSES': ('a', 'b')}}, src)
    tool.convert(str(src), str(dst))
    out = load_from_local(str(dst))
    assert list(out['state_dict']) == ['backbone.task_head.0.norm1.weight']
    assert out['meta']['CLASSES'] == ('a', 'b')


@pytest.mark.parametrize('case', ['empty', 'missing', 'truncated', 'legacy'])
def test_bad_source_gives_the_loaders_message(tmp_path, case):
    src = tmp_path / 'original.pth'
    if case == 'empty':
        src.write_bytes(b'')
    elif case == 'truncated':
        torch.save({'state_dict': {'w': torch.zeros(1000)}}, src)
        src.write_bytes(src.read_bytes()[:2000])
    elif case == 'legacy':  # holding an object weights_only refuses
        torch.save({'state_dict': {'w': torch.zeros(3)}, 'args': argparse.Namespace(lr=1)}, src,
                   _use_new_zipfile_serialization=False)
    expected = loader_message(src)
    assert {'empty': 'is empty (0 bytes)', 'missing': 'does not exist',
            'truncated': 'is corrupt or truncated',
            'legacy': 'is not in a safe format'}[case] in expected
    with pytest.raises(SystemExit) as info:
        tool.convert(str(src), str(tmp_path / 'out.pth'))
    assert info.value.code == expected
    assert not (tmp_path / 'out.pth').exists()


def test_missing_output_folder_is_named_before_any_work(tmp_path):
    src = tmp_path / 'original.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}}, src)
    folder = tmp_path / 'no' / 'such'
    with pytest.raises(SystemExit, match=re.escape(f'Output folder {folder} does not exist')):
        tool.convert(str(src), str(folder / 'out.pth'))
