"""Checks run by the launchers before any work: datasets and pretrained weights are there."""
import os.path as osp
from typing import Iterator, List

from mmengine.config import Config, ConfigDict

from mmseg.registry import MODELS

PREPARE_DOCS = 'https://mmsegmentation.readthedocs.io/en/latest/user_guides/2_dataset_prepare.html'


def _dataset_paths(dataset: dict) -> Iterator[str]:
    if dataset.get('type') in ('ConcatDataset', 'RepeatDataset', 'MultiImageMixDataset'):
        for sub in dataset.get('datasets', [dataset.get('dataset')]):
            yield from _dataset_paths(sub)
        return
    root = dataset.get('data_root', '') or ''
    prefix = dataset.get('data_prefix', {}) or {}
    for key in ('img_path', 'seg_map_path'):
        if prefix.get(key):
            yield osp.join(root, prefix[key])
    if dataset.get('ann_file'):
        yield osp.join(root, dataset['ann_file'])


def missing_data(cfg: Config, splits=('train', 'val', 'test')) -> List[str]:
    missing = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if loader and loader.get('dataset'):
            missing += [p for p in _dataset_paths(loader['dataset'])
                        if not osp.exists(p) and p not in missing]
    return missing


def trunk_configs(node) -> Iterator[dict]:
    """Every config dict in ``node`` whose registered class finds its own weights (the trunks)."""
    if isinstance(node, (dict, ConfigDict)):
        cls = MODELS.get(node['type']) if isinstance(node.get('type'), str) else None
        if cls is not None and hasattr(cls, 'find_weights'):
            yield node
        for v in node.values():
            yield from trunk_configs(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from trunk_configs(v)


def preflight(cfg: Config, splits=('train', 'val', 'test'), weights: bool = True):
    """Raise one clear error if a dataset folder is missing; fetch (or explain how to get) the
    pretrained trunk weights the model will load in ``init_weights()``."""
    missing = missing_data(cfg, splits)
    if missing:
        dataset = (cfg.get('train_dataloader') or cfg.get('test_dataloader'))['dataset']
        raise FileNotFoundError(
            'Dataset not found: ' + ', '.join(missing) + '\n'
            f'Prepare {dataset.get("type", "the dataset")} as in {PREPARE_DOCS} '
            '(paths are relative to the working directory), or point the config at it, e.g. '
            "--cfg-options train_dataloader.dataset.data_root=/path val_dataloader.dataset.data_root=/path")
    if weights:
        for trunk in trunk_configs(cfg.model):
            MODELS.get(trunk['type']).find_weights(trunk)
