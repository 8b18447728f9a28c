"""Training the CTS policy network on the labels of any mmseg dataset config.

The recipe is the official one (tue-mps/cts-segmenter ``policynet/``): AdamW, lr 5e-5, weight
decay 1e-3, batch 8, 50k iterations, cross-entropy with ignore index 255. Images come through the
config's own train pipeline and data preprocessor, then ``CTSPolicyNet.prepare`` (the
preprocessor's normalisation undone, the policy's own applied: the official (x - 127.5) / 127.5
unless the config's policy says otherwise), as in the segmentor; targets come from the labels
padded as the trunk pads images (``trunk.pad``) and tiled into its 2x2-patch superpatches
(``superpatch_labels``). The written file's ``meta`` states the policy's ``mean``/``std``,
``superpatch_px`` and the trunk's ``patch_size``; a segmentor whose config contradicts them
refuses the file.
"""
import os
import os.path as osp
import time
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.fileio import get as read_bytes
from mmengine.registry import init_default_scope
from mmengine.runner import set_random_seed
from mmseg.registry import DATASETS, MODELS
from torch.utils.data import DataLoader

from ..models.backbones.token_sharing import superpatch_labels
from ..utils.atomic import atomic_write
from ..utils.preflight import missing_data


def check_labels(dataset, config: str):
    """Raise one clear error, naming the file, if the dataset's label maps cannot be read."""
    import mmcv
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    if not infos:
        raise ValueError(f'{config}: the train dataset is empty; CTS policy training needs '
                         'images with label maps.')
    paths = [info.get('seg_map_path') for info in infos]
    if any(p is None for p in paths):
        raise ValueError(f'{config}: the train dataset has no label maps (seg_map_path); CTS '
                         'policy targets come from the segmentation labels.')
    missing = [p for p in paths if not osp.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f'CTS policy training cannot read the labels of {config}: {len(missing)} label '
            f'file(s) missing, e.g. {missing[0]}. Prepare the dataset as mmseg documents or '
            'point the config at it (train_dataloader.dataset.data_root).')
    for path in paths[:1] + paths[-1:]:
        try:
            label = mmcv.imfrombytes(read_bytes(path), flag='unchanged', backend='pillow')
        except Exception as e:  # truncated or not an image: same advice
            label, reason = None, f'{type(e).__name__}: {e}'
        else:
            reason = 'not a single-channel label image'
        if label is None or label.ndim != 2:
            raise ValueError(f'CTS policy training cannot read label map {path} ({reason}). '
                             'Labels must be single-channel PNGs of class indices (255: ignore).')


def build_trunk_shape(cfg: Config):
    """The config's trunk on the meta device: its ``pad`` and ``patch_size``, no weights."""
    trunk_cfg = cfg.model.backbone.trunk.copy()
    trunk_cfg.pop('pretrained', None)
    with torch.device('meta'):
        return MODELS.build(trunk_cfg)


def train_policy(config: str, out: str, iters: int = 50000, batch_size: int = 8,
                 lr: float = 5e-5, weight_decay: float = 1e-3, pretrained: Optional[str] = None,
                 device: str = 'cpu', num_workers: int = 0, val_images: int = 100,
                 log_interval: int = 100, cfg_options: Optional[dict] = None,
                 seed: int = 0, save_interval: int = 1000, log=print) -> dict:
    """Train the policy of ``config``'s model on its train set; write ``out``; return stats.

    ``out`` is written every ``save_interval`` iterations (its ``meta['iter']`` says how far the
    training got) and at the end, each time atomically: a killed run keeps the last one.
    """
    for name, value in (('iters', iters), ('batch_size', batch_size),
                        ('save_interval', save_interval), ('log_interval', log_interval)):
        if value < 1:
            raise ValueError(f'CTS policy training: {name} {value}; it must be at least 1.')
    check_out(out)
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    set_random_seed(seed)  # python, numpy, torch: the policy's init and the pipeline's flips
    missing = missing_data(cfg, ('train', ))
    if missing:
        raise FileNotFoundError(f'CTS policy training cannot read the labels of {config}: '
                                f'{missing[0]} does not exist. Prepare the dataset or point the '
                                'config at it (train_dataloader.dataset.data_root).')
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    check_labels(dataset, config)
    if len(dataset) < batch_size:
        # drop_last: a data set smaller than one batch gives no batch at all
        folder = (getattr(dataset, 'data_prefix', {}).get('img_path')
                  or getattr(dataset, 'data_root', None) or 'its data root')
        raise ValueError(
            f'CTS policy training: the train set of {config} ({folder}) has {len(dataset)} '
            f'image(s), fewer than one batch of {batch_size}. Lower the batch (--batch '
            f'{len(dataset)}) or point the config at the full data set.')
    trunk = build_trunk_shape(cfg)
    patch = trunk.patch_size
    preprocessor = MODELS.build(cfg.model.data_preprocessor).to(device)
    input_mean, input_std = input_normalization(preprocessor, cfg, config)
    sharing = cfg.model.backbone.get('token_sharing') or {}
    policy_cfg = dict(sharing.get('policy') or dict(type='CTSPolicyNet'), pretrained=pretrained)
    policy = MODELS.build(policy_cfg)
    policy.init_weights()
    policy.to(device).train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=num_workers, collate_fn=pseudo_collate,
                        generator=torch.Generator().manual_seed(seed))
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)

    def batch_targets(data):
        x = trunk.pad(data['inputs'])
        labels = torch.stack([s.gt_sem_seg.data[0] for s in data['data_samples']])
        if labels.shape[-2:] != data['inputs'].shape[-2:]:
            # A test pipeline resizes the image, not the label (mmseg scores at the original
            # size): the policy's targets must tile the image as the trunk sees it.
            labels = F.interpolate(labels[:, None].float(), size=data['inputs'].shape[-2:],
                                   mode='nearest')[:, 0].long()
        labels = trunk.pad(labels, 255)
        super_grid = (x.shape[-2] // patch // 2, x.shape[-1] // patch // 2)
        return (policy.prepare(x, super_grid, patch, input_mean, input_std),
                superpatch_labels(labels, super_grid, patch))

    folder = osp.dirname(osp.abspath(out))
    if not osp.isdir(folder):  # now, not at the first save: a bad path fails before training
        os.makedirs(folder)
        log(f'created the folder {folder} for the policy')
    log(f'CTS policy: {len(dataset)} training images, batch {batch_size}, {iters} iterations, '
        f'AdamW lr {lr} wd {weight_decay}, patch {patch} -> {2 * patch} px superpatches '
        f'(policy input resized {2 * patch} -> {policy.stride} px per superpatch, normalised '
        f'with mean {list(policy.mean)} std {list(policy.std)})')
    # What the policy was trained for: the segmentor checks its config against it on loading.
    stats = dict(config=config, iters=iters, batch_size=batch_size, lr=lr,
                 weight_decay=weight_decay, seed=seed, patch_size=patch,
                 superpatch_px=policy.stride, mean=list(policy.mean), std=list(policy.std))
    step, start, running = 0, time.time(), []
    while step < iters:
        for data in loader:
            if step >= iters:
                break
            x, target = batch_targets(preprocessor(data, training=True))
            loss = criterion(policy(x).float(), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running.append(loss.item())
            step += 1
            if step % log_interval == 0 or step == iters:
                log(f'iter {step}/{iters} loss {sum(running) / len(running):.4f} '
                    f'({time.time() - start:.0f} s)')
                running = []
            if step % save_interval == 0 and step < iters:
                log(f'Saving the policy at {step} iterations to {out}')
                save_policy(policy, dict(stats, iter=step), out)
    stats['iter'] = iters
    save_policy(policy, stats, out)  # before the evaluation: a failure there keeps the training
    evaluation = evaluate_policy(policy, cfg, trunk, preprocessor, val_images, batch_targets)
    if evaluation:
        stats.update(evaluation)
        log(f'val superpatch accuracy {stats["val_accuracy"]:.1f} % on '
            f'{stats["val_superpatches"]} labelled superpatches '
            f'({stats["val_positive"]:.1f} % one-class)')
        save_policy(policy, stats, out)
    else:
        log('no val evaluation (val images 0, or the config has no val_dataloader)')
    log(f'policy written to {out}')
    return stats


def input_normalization(preprocessor, cfg: Config, config: str):
    """(mean, std) of the data preprocessor's normalisation (0 and 1 where it has none); refuse a
    config whose ``token_sharing.input_mean``/``input_std`` say otherwise, as the segmentor would
    then give the policy other input than this training."""
    if getattr(preprocessor, 'mean', None) is None:
        mean, std = [0.0] * 3, [1.0] * 3
    else:
        # Rounded: the float32 buffers hold 123.67500305 for the config's 123.675.
        mean, std = ([round(v, 4) for v in t.flatten().tolist()]
                     for t in (preprocessor.mean, preprocessor.std))
    sharing = cfg.model.backbone.get('token_sharing') or {}
    for key, value in (('input_mean', mean), ('input_std', std)):
        stated = sharing.get(key)
        if stated is not None and not torch.allclose(torch.tensor(stated, dtype=torch.float64),
                                                     torch.tensor(value, dtype=torch.float64)):
            raise ValueError(
                f'{config}: model.backbone.token_sharing.{key} is {list(stated)}, but the data '
                f'preprocessor normalises with {value}: the segmentor would give the policy '
                'other images than it is trained on. Set it to the data preprocessor\'s value '
                '({{_base_.model.data_preprocessor.' + key.replace('input_', '') + '}}).')
    return mean, std


def check_out(out: str):
    """Refuse, before any work, an ``out`` that names a folder (the write would fail at the end)."""
    if osp.isdir(out):
        raise IsADirectoryError(
            f'CTS policy training: --out {out} is a folder; name the policy file to write, e.g. '
            f'{osp.join(out, "cts_policy.pth")}.')


def save_policy(policy, stats: dict, out: str):
    """Write the policy checkpoint atomically (``mmseg_custom.utils.atomic_write``)."""
    with atomic_write(out) as f:
        torch.save(dict(state_dict={k: v.cpu() for k, v in policy.state_dict().items()},
                        meta=stats), f)


@torch.no_grad()
def evaluate_policy(policy, cfg, trunk, preprocessor, num_images, batch_targets) -> dict:
    """Superpatch accuracy of the policy's argmax on the first images of the val set; an empty
    dict where there is nothing to evaluate."""
    loader = cfg.get('val_dataloader')
    if not loader or num_images <= 0:
        return {}
    dataset = DATASETS.build(loader.dataset)
    policy.eval()
    correct = total = positive = 0
    for i in range(min(num_images, len(dataset))):
        x, target = batch_targets(preprocessor(pseudo_collate([dataset[i]]), training=False))
        pred = policy(x).argmax(dim=1)
        valid = target != 255
        correct += (pred[valid] == target[valid]).sum().item()
        positive += target[valid].sum().item()
        total += valid.sum().item()
    policy.train()
    return dict(val_accuracy=100 * correct / max(total, 1), val_superpatches=total,
                val_positive=100 * positive / max(total, 1))
