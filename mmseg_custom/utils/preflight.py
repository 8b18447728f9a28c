"""Checks run by the launchers before any work: datasets and pretrained weights are there."""
import os.path as osp
from typing import Iterator, List, Tuple

from mmengine.config import Config, ConfigDict

from ..models.backbones.token_sharing import read_policy_weights
from ..models.weights import local_rank, resolve_weights

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


def _pretrained_of(node) -> Iterator[Tuple[str, str]]:
    """(type, pretrained) of every module config that names weights."""
    if isinstance(node, (dict, ConfigDict)):
        if node.get('pretrained') and isinstance(node.get('pretrained'), str) and 'type' in node:
            yield node['type'], node['pretrained']
        for v in node.values():
            yield from _pretrained_of(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _pretrained_of(v)


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
    # Before the process group exists: one process per node downloads missing weights now; the
    # others get them in init_weights() once it has (resolve_weights_once_per_node).
    if weights and local_rank() == 0:
        for type_, pretrained in _pretrained_of(cfg.model):
            if type_ == 'CTSPolicyNet':  # a local file made by tools/train_cts_policy.py
                read_policy_weights(pretrained)
            else:
                resolve_weights(pretrained)
