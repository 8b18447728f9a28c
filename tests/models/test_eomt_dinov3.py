"""EoMT on DINOv3 as the official code runs it: the trunk is transformers' DINOv3ViTModel (RoPE on
the patch tokens only, so none on the queries), its keys renamed by the official
``ViT.transformers_to_timm`` (``embeddings`` -> ``patch_embed``, ``layer`` -> ``blocks``), and the
published checkpoints hold it as differences to the DINOv3 weights. Our EoMT runs timm's DINOv3
(TimmViT) on the converted checkpoint; the reference below is the official ``EoMT.forward`` for a
transformers trunk, written here from tue-mps/eomt models/eomt.py @ 7bd19dd."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS

transformers = pytest.importorskip('transformers')
pytest.importorskip('mmdet')

import mmseg_custom  # noqa: E402,F401
import mmseg_custom.models.eomt  # noqa: E402,F401
from mmseg_custom.models.eomt.head import ScaleBlock  # noqa: E402

DIM, DEPTH, HEADS, SIZE, Q, K, BLOCKS = 64, 4, 2, 64, 5, 3, 2
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ('norm' in name and name.endswith('weight')) or 'lambda' in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def hf_dinov3(seed):
    config = transformers.DINOv3ViTConfig(
        hidden_size=DIM, intermediate_size=4 * DIM, num_hidden_layers=DEPTH,
        num_attention_heads=HEADS, num_register_tokens=4, patch_size=16, image_size=SIZE,
        layer_norm_eps=1e-5, rope_theta=100.0, attn_implementation='sdpa')
    model = transformers.DINOv3ViTModel(config).eval().double()
    randomize(model, seed)
    return model


class OfficialEoMT(nn.Module):
    """tue-mps/eomt ``EoMT`` on ``ViT`` with a transformers DINOv3 trunk (eval, no compile)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.q = nn.Embedding(Q, DIM)
        self.class_head = nn.Linear(DIM, K + 1)
        self.mask_head = nn.Sequential(nn.Linear(DIM, DIM), nn.GELU(), nn.Linear(DIM, DIM),
                                       nn.GELU(), nn.Linear(DIM, DIM))
        self.upscale = nn.Sequential(
            *[ScaleBlock(DIM) for _ in range(max(1, int(math.log2(16)) - 2))])
        self.register_buffer('attn_mask_probs', torch.ones(BLOCKS))
        self.grid = (SIZE // 16, SIZE // 16)
        self.num_prefix = 1 + backbone.config.num_register_tokens

    def _predict(self, x):
        q = x[:, :Q]
        p = x[:, Q + self.num_prefix:].transpose(1, 2).reshape(x.shape[0], -1, *self.grid)
        return torch.einsum('bqc,bchw->bqhw', self.mask_head(q), self.upscale(p)), \
            self.class_head(q)

    def _attn_mask(self, x, mask_logits, i):
        n = x.shape[1]
        mask = torch.ones(x.shape[0], n, n, dtype=torch.bool)
        inter = F.interpolate(mask_logits, self.grid, mode='bilinear')
        mask[:, :Q, Q + self.num_prefix:] = inter.view(inter.shape[0], inter.shape[1], -1) > 0
        prob = self.attn_mask_probs[i - DEPTH + BLOCKS]
        if prob < 1:
            rand = torch.rand(mask.shape[0], Q) > prob
            mask[:, :Q, Q + self.num_prefix:][rand] = True
        return mask

    def forward(self, x):
        bb = self.backbone
        x = (x - MEAN.to(x)) / STD.to(x)
        rope = bb.rope_embeddings(x)
        x = bb.embeddings(x)
        attn_mask, masks, classes = None, [], []
        for i, block in enumerate(bb.layer):
            if i == DEPTH - BLOCKS:
                x = torch.cat((self.q.weight[None].expand(x.shape[0], -1, -1), x), dim=1)
            if i >= DEPTH - BLOCKS:
                m, c = self._predict(bb.norm(x))
                masks.append(m)
                classes.append(c)
                attn_mask = self._attn_mask(x, m, i)
            mask = None if attn_mask is None else attn_mask[:, None].expand(-1, HEADS, -1, -1)
            x = x + block.layer_scale1(block.attention(block.norm1(x), mask, rope)[0])
            x = x + block.layer_scale2(block.mlp(block.norm2(x)))
        m, c = self._predict(bb.norm(x))
        return masks + [m], classes + [c]


def official_state_dict(ref, backbone_sd):
    """The official LightningModule.state_dict() of ``ref``: the transformers trunk renamed as
    ViT.transformers_to_timm leaves it (mask_token deleted)."""
    sd = {}
    for k, v in backbone_sd.items():
        if k == 'embeddings.mask_token':
            continue
        k = k.replace('embeddings.', 'patch_embed.', 1) if k.startswith('embeddings.') else k
        k = k.replace('layer.', 'blocks.', 1) if k.startswith('layer.') else k
        sd['network.encoder.backbone.' + k] = v.float()
    for k, v in ref.state_dict().items():
        if not k.startswith('backbone.'):
            sd['network.' + k] = v.float()
    sd['network.encoder.pixel_mean'] = MEAN
    sd['network.encoder.pixel_std'] = STD
    sd['criterion.empty_weight'] = torch.tensor([1.0] * K + [0.1])
    return sd


def our_model(pretrained=None, delta=False):
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(REPO, 'configs/_base_/models/eomt_dinov2.py')).model
    cfg.delta_weights = delta
    cfg.backbone.trunk = dict(type='TimmViT', name='vit_small_patch16_dinov3_qkvb',
                              pretrained=pretrained,
                              model_kwargs=dict(embed_dim=DIM, depth=DEPTH, num_heads=HEADS))
    cfg.decode_head.update(in_channels=DIM, num_classes=K, num_queries=Q, num_blocks=BLOCKS,
                           loss_cls=dict(class_weight=[1.0] * K + [0.1]))
    return MODELS.build(cfg)


@pytest.fixture(scope='module')
def reference():
    torch.manual_seed(0)
    ref = OfficialEoMT(hf_dinov3(seed=1)).double().eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for k, p in ref.named_parameters():
            if not k.startswith('backbone.'):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype)
                        / math.sqrt(p.shape[-1] if p.dim() > 1 else 1))
        ref.q.weight.mul_(3)
        for p in ref.parameters():
            p.copy_(p.float().double())  # what an fp32 checkpoint holds
    return ref


def _compare(ours, ref, x, probs):
    ref.attn_mask_probs.fill_(probs)
    ours.decode_head.attn_mask_probs.fill_(probs)
    with torch.no_grad():
        want = ref(x)
        got = ours.forward_layers((x - MEAN.double()) / STD.double(), all_layers=True)
    # Relative 1e-6: transformers and timm compute the rotary tables in fp32 (they differ by 5e-8).
    for a, b in zip(want[0] + want[1], got[0] + got[1]):
        assert (a - b).abs().max() < 1e-6 * a.abs().max()


@pytest.mark.parametrize('probs', [1.0, 0.0])
def test_official_dinov3_checkpoint(reference, probs, tmp_path):
    path = str(tmp_path / 'eomt_dinov3.bin')
    torch.save(official_state_dict(reference, reference.backbone.state_dict()), path)
    ours = our_model()
    load_checkpoint(ours, path, map_location='cpu', strict=True)
    x = torch.rand(2, 3, SIZE, SIZE, dtype=torch.float64)
    _compare(ours.double().eval(), reference, x, probs)


def test_delta_weights(reference, tmp_path):
    """The published DINOv3 layout: trunk = trained - pretrained; the pretrained DINOv3 comes from
    the trunk's ``pretrained`` (a transformers folder here)."""
    pretrained = hf_dinov3(seed=3)
    pretrained.float().save_pretrained(tmp_path / 'dinov3')
    base = pretrained.state_dict()
    deltas = {k: v - base[k] for k, v in reference.backbone.state_dict().items()}
    path = str(tmp_path / 'eomt_dinov3_delta.bin')
    torch.save(official_state_dict(reference, deltas), path)
    ours = our_model(pretrained=str(tmp_path / 'dinov3'), delta=True)
    load_checkpoint(ours, path, map_location='cpu', strict=True)
    x = torch.rand(1, 3, SIZE, SIZE, dtype=torch.float64)
    ours = ours.double().eval()
    reference.attn_mask_probs.fill_(1.0)
    ours.decode_head.attn_mask_probs.fill_(1.0)
    with torch.no_grad():
        want = reference(x)
        got = ours.forward_layers((x - MEAN.double()) / STD.double(), all_layers=True)
    # fp32 files: the deltas and the pretrained weights are rounded before they are summed.
    for a, b in zip(want[0] + want[1], got[0] + got[1]):
        assert (a - b).abs().max() < 1e-3

    missing = our_model(pretrained=None, delta=True)
    with pytest.raises(ValueError, match='difference to its pretrained weights'):
        load_checkpoint(missing, path, map_location='cpu')
