"""ViT-Split-S inference on CUDA (the shipped ADE20K config, random weights): bf16 autocast
(``--amp``) and ``torch.compile`` (``--compile``) against fp32 eager, and the batched slide
inference against mmseg's crop-by-crop loop."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401 (registers the models)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU'),
]

CONFIG = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
                  'ade20k', 'vitsplit', 'linear_dinov2_vitsplit_small_512_20k_ade20k.py')


@pytest.fixture
def no_tf32():
    """fp32 means fp32 here: cuDNN convolutions otherwise run in TF32 by default."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def build_model(**test_cfg):
    """ViT-Split-S for ADE20K (150 classes) with random weights, in eval mode on the GPU."""
    cfg = Config.fromfile(CONFIG)
    init_default_scope('mmseg')
    cfg.model.backbone.trunk.pretrained = None  # nothing to download
    cfg.model.test_cfg.update(test_cfg)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return revert_sync_batchnorm(model).cuda().eval()


def smooth_images(batch, height, width, seed=0):
    """Normalized images with the spatial correlation of photographs (random colours on an 8 x 8
    grid, upsampled), so that predicted regions are larger than single patches."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 3, 8, 8, generator=gen)
    fine = 0.2 * torch.randn(batch, 3, height, width, generator=gen)
    img = torch.nn.functional.interpolate(coarse, (height, width), mode='bicubic') + fine
    return img.cuda()


@pytest.mark.parametrize('fast', ['amp', 'compile'])
def test_fast_inference_matches_fp32_eager(fast, no_tf32):
    ref = build_model()
    model = build_model(**{fast: True})
    model.load_state_dict(ref.state_dict())
    x = smooth_images(2, 512, 512)
    metas = [dict(img_shape=(512, 512))] * 2
    with torch.no_grad():
        expected = ref.encode_decode(x, metas)
        out = model.encode_decode(x, metas)
    assert out.dtype == torch.float32 and out.shape == expected.shape == (2, 150, 512, 512)
    err = ((out - expected).norm() / expected.norm()).item()
    # bf16 rounds to 2**-9 at every layer: a few 1e-3 relative at the logits; compiled fp32
    # differs from eager by reassociated float sums only.
    assert err < (2e-2 if fast == 'amp' else 1e-4), f'relative error of the logits {err:.2e}'
    agree = (out.argmax(1) == expected.argmax(1)).double().mean().item()
    assert agree >= 0.999, f'predicted classes agree on {100 * agree:.3f} % of the pixels'


@pytest.mark.parametrize('crop_batch, batch', [(None, 2), (3, 1)],
                         ids=['device default (4), 2 images', '3 crops, 1 image'])
def test_batched_slide_equals_mmseg_loop(crop_batch, batch):
    """Same crops and averaging as mmseg's slide inference, run 4 crops at a time (the GPU
    default: 2 crops of each of 2 images) or 3 (the last chunk holds the 4th crop alone), in
    float64 so that batching changes nothing beyond float64 rounding. Images of 512 x 1195:
    4 crops of 512, stride 341."""
    model = build_model(crop_batch=crop_batch).double()
    x = smooth_images(batch, 512, 1195).double()
    metas = [dict(img_shape=(512, 1195), ori_shape=(512, 1195))] * batch
    with torch.no_grad():
        ours = model.slide_inference(x, [dict(m) for m in metas])
        ref = EncoderDecoder.slide_inference(model, x, [dict(m) for m in metas])
    assert ours.shape == (batch, 150, 512, 1195)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
