"""tools/image_demo.py refuses an image it cannot segment before loading anything."""
import importlib.util
import os.path as osp

import numpy as np
import pytest
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def image_demo():
    spec = importlib.util.spec_from_file_location(
        'image_demo', osp.join(REPO, 'tools', 'image_demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('content, match', [
    ('one pixel', r'is 1x1 px: one pixel holds nothing to segment'),
    ('not an image', 'is not an image file'),
])
def test_image_that_cannot_be_segmented_is_named(tmp_path, content, match):
    path = tmp_path / 'input.png'
    if content == 'one pixel':
        Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(path)
    else:
        path.write_text('text')
    # The checkpoint does not exist: the image is checked before the model is built.
    with pytest.raises(ValueError, match=match) as e:
        image_demo().main([osp.join(REPO, 'configs', 'demo', 'vitsplit_tiny_shapes.py'),
                           str(tmp_path / 'missing.pth'), str(path), '--device', 'cpu'])
    assert str(path) in str(e.value)
