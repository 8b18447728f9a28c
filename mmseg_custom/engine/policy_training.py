"""Training the CTS policy network on the labels of any mmseg dataset config.

The recipe is the official one (tue-mps/cts-segmenter ``policynet/``): AdamW, lr 5e-5, weight
decay 1e-3, batch 8, 50k iterations, cross-entropy with ignore index 255. Images come through the
config's own train pipeline and data preprocessor, so the policy sees exactly the normalized
crops the segmentor's policy will see; targets come from the labels padded as the trunk pads
images (``trunk.pad``) and tiled into its 2x2-patch superpatches (``superpatch_labels``).
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

from ..models.backbones.token_sharing import policy_input, superpatch_labels
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
                 seed: int = 0, log=print) -> dict:
    """Train the policy of ``config``'s model on its train set; write ``out``; return stats."""
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
    trunk = build_trunk_shape(cfg)
    patch = trunk.patch_size
    preprocessor = MODELS.build(cfg.model.data_preprocessor).to(device)
    policy_cfg = dict(type='CTSPolicyNet', pretrained=pretrained)
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
        return (policy_input(x, super_grid, patch, policy.stride),
                superpatch_labels(labels, super_grid, patch))

    log(f'CTS policy: {len(dataset)} training images, batch {batch_size}, {iters} iterations, '
        f'AdamW lr {lr} wd {weight_decay}, patch {patch} -> {2 * patch} px superpatches '
        f'(policy input resized {2 * patch} -> {policy.stride} px per superpatch)')
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
    stats = dict(config=config, iters=iters, batch_size=batch_size, lr=lr,
                 weight_decay=weight_decay, seed=seed, patch_size=patch)
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


def save_policy(policy, stats: dict, out: str):
    """Write the policy checkpoint atomically (a temporary file, then a rename)."""
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    tmp = out + '.tmp'
    torch.save(dict(state_dict={k: v.cpu() for k, v in policy.state_dict().items()},
                    meta=stats), tmp)
    os.replace(tmp, out)


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
