"""Pretrain a tiny trunk on the synthetic pretext of ``mmseg_custom.datasets.pretext_shapes``.

    python tools/pretrain_tiny_trunk.py [CONFIG] [--out assets/....safetensors] [--iters N]

The trunk is the one CONFIG's model builds (``model.backbone.trunk``; default: the demo's tiny
DINOv2-architecture trunk), so any trunk with the interface of ``backbones/dinov2.py``
(``tokenize``, ``blocks``, ``apply_block``, ``to_map``, ``embed_dims``, ``patch_size``) pretrains
the same way, e.g. a DINOv3-architecture one: pass its config. The pretext (formula-driven
supervised learning): for every 1/4-patch cell predict the shape family and the texture of the
object there and whether an outline runs through it, from the trunk's normed tokens after the
supervised blocks, through one linear layer each (the tokens must hold it linearly). Shapes and
textures are not the demo's classes (see ``pretext_shapes``).

The weights are saved as fp16 safetensors in the trunk's own state-dict layout (the official
DINOv2 layout for ``DINOv2``), which its ``pretrained=`` argument loads; a JSON log (losses,
held-out accuracies, seconds) goes beside them. Same seed, thread count, machine and torch: the
same bytes (data and initialisation come from the seed alone; see the README).
"""
import argparse
import hashlib
import json
import math
import os
import os.path as osp
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401 (registers the trunks)
from mmseg_custom.datasets.pretext_shapes import SHAPES, TEXTURES, pretext_batch
from mmseg_custom.utils import atomic_write, write_atomic

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(REPO, 'configs', 'demo', 'vitsplit_tiny_shapes.py')
CELLS = 4  # label cells per patch side: 3.5 px cells for a 14 px patch
OUTPUTS = {'shape': len(SHAPES), 'texture': len(TEXTURES), 'edge': 1}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Pretrain a tiny trunk on a synthetic pretext.')
    parser.add_argument('config', nargs='?', default=DEFAULT_CONFIG,
                        help='config whose model.backbone.trunk is pretrained (default: the demo)')
    parser.add_argument('--out', default=osp.join('assets', 'dinov2_tiny_pretext.safetensors'),
                        help='weights file (.safetensors, fp16)')
    parser.add_argument('--iters', type=int, default=1500, help='training steps')
    parser.add_argument('--batch', type=int, default=16, help='images per step')
    parser.add_argument('--lr', type=float, default=1e-3, help='peak AdamW learning rate')
    parser.add_argument('--seed', type=int, default=0, help='data and initialisation seed')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads (the bytes of the result depend on it)')
    parser.add_argument('--supervise', type=int, nargs='+', default=None,
                        help='blocks whose tokens feed a pretext head (default: the middle and '
                        'the last block, as ViT-Split reads early blocks and copies late ones)')
    parser.add_argument('--log-interval', type=int, default=25)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of CONFIG (e.g. model.backbone.trunk.arch...)')
    return parser.parse_args(argv)


def build_trunk(config, cfg_options=None):
    """The randomly initialised trunk of ``config``'s backbone (its ``pretrained`` ignored)."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    trunk_cfg = cfg.model.backbone.get('trunk')
    if trunk_cfg is None:
        raise ValueError(f'{config}: model.backbone has no trunk config; pass a ViT-Split or '
                         'DINOv2Backbone config (model.backbone.trunk=dict(type=...))')
    trunk_cfg = trunk_cfg.copy()
    if 'pretrained' in trunk_cfg:
        trunk_cfg.pretrained = None
    trunk = MODELS.build(trunk_cfg)
    trunk.init_weights()
    preproc = cfg.model.data_preprocessor
    mean = torch.tensor(preproc.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(preproc.std, dtype=torch.float32).view(1, 3, 1, 1)
    size = cfg.model.data_preprocessor.get('size') or (112, 112)
    return trunk, trunk_cfg, (mean, std), size[0]


class PretextHeads(nn.Module):
    """One linear layer per supervised block: token -> CELLS x CELLS cells x all pretext outputs."""

    def __init__(self, dim, blocks):
        super().__init__()
        self.blocks = list(blocks)
        width = sum(OUTPUTS.values()) * CELLS * CELLS
        self.heads = nn.ModuleList(nn.Conv2d(dim, width, 1) for _ in self.blocks)

    def forward(self, trunk, x):
        """Per supervised block, (B, outputs, CELLS*h, CELLS*w) logits."""
        tokens, grid = trunk.tokenize(x)
        out = []
        for i, blk in enumerate(trunk.blocks[:max(self.blocks) + 1]):
            tokens = trunk.apply_block(blk, tokens, grid)
            if i in self.blocks:
                head = self.heads[self.blocks.index(i)]
                out.append(F.pixel_shuffle(head(trunk.to_map(tokens, grid)), CELLS))
        return out


def cell_targets(labels, shape):
    """Labels at the cells' resolution: class of the cell centre, outline anywhere in the cell."""
    def nearest(t):
        return F.interpolate(t[:, None].float(), size=shape, mode='nearest')[:, 0].long()

    edge = F.adaptive_max_pool2d(labels['edge'][:, None].float(), shape)[:, 0]
    return nearest(labels['shape']), nearest(labels['texture']), edge


def balanced_weights(target, num_classes):
    """Per-class weights ~ 1 / frequency in the batch (absent classes: 0), mean 1 over the
    present classes: without them the background (most cells) wins and the heads learn to predict
    it everywhere (the first 200-step trunk stayed at chance on shape and texture)."""
    counts = torch.bincount(target.flatten(), minlength=num_classes).float()
    weights = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    return weights * (counts > 0).sum() / weights.sum()


def pretext_loss(logits, targets):
    shape_t, texture_t, edge_t = targets
    n_shape, n_texture = OUTPUTS['shape'], OUTPUTS['texture']
    w_shape, w_texture = balanced_weights(shape_t, n_shape), balanced_weights(texture_t, n_texture)
    edge_pos = edge_t.mean().clamp(min=1e-3)
    losses = {}
    for k, out in enumerate(logits):
        shape, texture, edge = out.split([n_shape, n_texture, 1], dim=1)
        losses[f'shape{k}'] = F.cross_entropy(shape, shape_t, weight=w_shape)
        losses[f'texture{k}'] = F.cross_entropy(texture, texture_t, weight=w_texture)
        losses[f'edge{k}'] = F.binary_cross_entropy_with_logits(
            edge[:, 0], edge_t, pos_weight=(1 - edge_pos) / edge_pos)
    return losses


@torch.no_grad()
def evaluate(trunk, heads, batches, norm, size):
    """Held-out per-class-mean accuracy of the last head: shape, texture, outline (F1)."""
    trunk.eval()
    stats = {'shape': [], 'texture': [], 'edge_f1': []}
    for img, labels in batches:
        out = heads(trunk, (img - norm[0]) / norm[1])[-1]
        shape_t, texture_t, edge_t = cell_targets(labels, out.shape[-2:])
        shape, texture, edge = out.split([OUTPUTS['shape'], OUTPUTS['texture'], 1], dim=1)
        for name, logit, target in (('shape', shape, shape_t), ('texture', texture, texture_t)):
            pred = logit.argmax(1)
            accs = [(pred[target == c] == c).float().mean().item()
                    for c in range(logit.shape[1]) if (target == c).any()]
            stats[name].append(sum(accs) / len(accs))
        pred_edge = edge[:, 0] > 0
        tp = (pred_edge & (edge_t > 0)).sum().item()
        stats['edge_f1'].append(2 * tp / max(1, pred_edge.sum().item() + (edge_t > 0).sum().item()))
    trunk.train()
    return {k: round(100 * sum(v) / len(v), 2) for k, v in stats.items()}


def save_fp16(state_dict, path, metadata):
    from safetensors.torch import save
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in state_dict.items()}
    # save() gives the bytes save_file() writes (the shipped asset is rebuilt bit for bit)
    write_atomic(path, save(tensors, metadata=metadata))


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def main(argv=None):
    args = parse_args(argv)
    if not args.out.endswith('.safetensors'):
        raise ValueError(f'--out {args.out!r}: write a .safetensors file (fp16 weights)')
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    trunk, trunk_cfg, norm, size = build_trunk(args.config, args.cfg_options)
    depth = len(trunk.blocks)
    blocks = args.supervise or sorted({depth // 2 - 1, depth - 1})
    if any(not 0 <= b < depth for b in blocks):
        raise ValueError(f'--supervise {blocks}: block indices must lie in [0, {depth})')
    heads = PretextHeads(trunk.embed_dims, blocks)
    trunk.train()
    params = [p for p in list(trunk.parameters()) + list(heads.parameters()) if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05, fused=True)
    warmup = max(1, args.iters // 20)

    def lr_at(step):  # linear warm-up, then cosine decay to 0
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return args.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (args.iters - warmup)))

    # Held-out batches come from their own generator: the training data never depends on them.
    held_out_gen = torch.Generator().manual_seed(args.seed + 10_000)
    held_out = [pretext_batch(held_out_gen, args.batch, size) for _ in range(2)]
    gen = torch.Generator().manual_seed(args.seed)
    log, start = [], time.perf_counter()
    for step in range(args.iters):
        img, labels = pretext_batch(gen, args.batch, size)
        logits = heads(trunk, (img - norm[0]) / norm[1])
        losses = pretext_loss(logits, cell_targets(labels, logits[0].shape[-2:]))
        loss = sum(losses.values())
        for group in optim.param_groups:
            group['lr'] = lr_at(step)
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        if (step + 1) % args.log_interval == 0 or step + 1 == args.iters:
            entry = dict(step=step + 1, loss=round(loss.item(), 4),
                         seconds=round(time.perf_counter() - start, 1),
                         **{k: round(v.item(), 4) for k, v in losses.items()})
            log.append(entry)
            print(json.dumps(entry), flush=True)
    seconds = time.perf_counter() - start
    accuracy = evaluate(trunk, heads, held_out, norm, size)
    print(f'held-out (last head): {accuracy}')
    settings = dict(config=osp.relpath(args.config, REPO) if args.config.startswith(REPO)
                    else args.config, trunk=trunk_cfg.to_dict(), iters=args.iters,
                    batch=args.batch, lr=args.lr, seed=args.seed, threads=args.threads,
                    supervise=blocks, cfg_options=args.cfg_options, torch=torch.__version__)
    # One metadata entry: safetensors writes several in an arbitrary order (other bytes).
    save_fp16(trunk.state_dict(), args.out,
              {'pretrain': json.dumps(settings, sort_keys=True, default=str)})
    digest = sha256(args.out)
    with atomic_write(osp.splitext(args.out)[0] + '.json', 'w') as f:
        json.dump(dict(settings, sha256=digest, seconds=round(seconds, 1),
                       held_out=accuracy, log=log), f, indent=1, default=str)
    print(f'wrote {args.out} ({osp.getsize(args.out) / 2**20:.1f} MiB, sha256 {digest}) '
          f'after {args.iters} steps in {seconds / 60:.1f} min')
    return dict(path=args.out, sha256=digest, held_out=accuracy, seconds=seconds)


if __name__ == '__main__':
    main()
