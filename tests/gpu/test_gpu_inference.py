"""ViT-Split-S inference on CUDA (the shipped ADE20K config's architecture, random trunk):
bf16 autocast (``--amp``) and ``torch.compile`` (``--compile``) against fp32 eager, and the batched
slide inference against mmseg's crop-by-crop loop."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401 (registers the models)
from mmseg_custom.datasets.synthetic_shapes import CLASSES, generate_sample

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


def build_model(num_classes=150, **test_cfg):
    """ViT-Split-S with random weights, in eval mode on the GPU."""
    cfg = Config.fromfile(CONFIG)
    init_default_scope('mmseg')
    cfg.model.backbone.trunk.pretrained = None  # nothing to download
    cfg.model.decode_head.num_classes = num_classes
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


def shapes_batch(count, seed, size=224):
    """Normalized images and labels of the demo's synthetic shapes (6 classes)."""
    rng = np.random.default_rng(seed)
    imgs, labels = zip(*(generate_sample(rng, size) for _ in range(count)))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    return x.cuda(), torch.from_numpy(np.stack(labels)).long().cuda()


@pytest.fixture(scope='module')
def trained_state():
    """Weights of ViT-Split-S trained for 300 steps on synthetic shapes (random frozen trunk).

    Agreement of predicted classes only means something where the fp32 model takes firm
    decisions: with random weights, 150 near-equal logits per pixel flip under any rounding
    (bf16 on the CPU agreed on 98.4 % of the pixels of such a model). Trained, the logits of a
    pixel differ by far more than bf16's rounding except in a thin band along object edges."""
    model = build_model(num_classes=len(CLASSES)).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-3)
    x, labels = shapes_batch(256, seed=0)
    gen = torch.Generator(device='cuda').manual_seed(0)
    losses = []
    for _ in range(300):
        idx = torch.randint(0, len(x), (16,), generator=gen, device='cuda')
        logits = model.encode_decode(x[idx], [dict(img_shape=(224, 224))] * 16)
        loss = torch.nn.functional.cross_entropy(logits, labels[idx])
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f'training did not learn: loss {losses[0]:.3f} -> ' \
        f'{losses[-1]:.3f}'
    return model.state_dict()


@pytest.mark.parametrize('fast', ['amp', 'compile'])
def test_fast_inference_matches_fp32_eager(fast, trained_state, no_tf32):
    ref = build_model(num_classes=len(CLASSES))
    model = build_model(num_classes=len(CLASSES), **{fast: True})
    ref.load_state_dict(trained_state)
    model.load_state_dict(trained_state)
    x, _ = shapes_batch(4, seed=1)  # images the model was not trained on
    metas = [dict(img_shape=(224, 224))] * 4
    with torch.no_grad():
        expected = ref.encode_decode(x, metas)
        out = model.encode_decode(x, metas)
    assert out.dtype == torch.float32 and out.shape == expected.shape == (4, 6, 224, 224)
    err = ((out - expected).norm() / expected.norm()).item()
    # bf16 rounds to 2**-9 at every layer: a few 1e-3 relative at the logits (8e-3 measured on
    # the CPU); compiled fp32 differs from eager by reassociated float sums only.
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
