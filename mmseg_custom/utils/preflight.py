"""Checks run by the launchers before any work: datasets and pretrained weights are there,
and each split lists images whose label maps have their size."""
import os.path as osp
from typing import Iterator, List, Tuple

from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope
from mmseg.registry import DATASETS
from PIL import Image

from mmseg.registry import MODELS

from ..models.weights import local_rank

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


def _leaf_datasets(dataset: dict) -> Iterator[dict]:
    if dataset.get('type') in ('ConcatDataset', 'RepeatDataset', 'MultiImageMixDataset'):
        for sub in dataset.get('datasets', [dataset.get('dataset')]):
            yield from _leaf_datasets(sub)
    else:
        yield dataset


def _size(path):
    """(width, height) from the file's header, or None where PIL cannot read it."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError):
        return None


def check_dataset_contents(cfg: Config, splits=('train', 'val', 'test')):
    """Raise one clear error, naming the files, if a split lists no image, an image and its
    label map differ in size or a label map has a 1-pixel side (read from the file headers,
    nothing decoded).

    Without this, an empty split fails deep in mmengine (``need at least one array to
    concatenate``) and a size mismatch in a transform or the metric, naming no file.
    """
    scope = cfg.get('default_scope', 'mmseg')
    with DefaultScope.overwrite_default_scope(scope):
        for split in splits:
            loader = cfg.get(f'{split}_dataloader')
            if not (loader and loader.get('dataset')):
                continue
            for dataset_cfg in _leaf_datasets(loader['dataset']):
                dataset = DATASETS.build(dict(dataset_cfg, lazy_init=True))
                data_list = dataset.load_data_list()
                if not data_list:
                    img_dir = dataset.data_prefix.get('img_path', dataset.data_root)
                    listed = f' listed in {dataset.ann_file}' if dataset.ann_file else ''
                    suffix = getattr(dataset, 'img_suffix', '')
                    raise FileNotFoundError(
                        f'The {split} split of {type(dataset).__name__} is empty: no image '
                        f'ending in {suffix!r} in {img_dir}{listed}. Put the images there, or '
                        'point the config at them (data_root, data_prefix.img_path, '
                        'img_suffix, ann_file), e.g. --cfg-options '
                        f'{split}_dataloader.dataset.data_root=/path')
                for info in data_list:
                    img_path, seg_path = info.get('img_path'), info.get('seg_map_path')
                    if not (img_path and seg_path and osp.isfile(seg_path)):
                        continue
                    img_size, seg_size = _size(img_path), _size(seg_path)
                    if seg_size and min(seg_size) < 2:
                        raise ValueError(
                            f'{seg_path} is {seg_size[0]}x{seg_size[1]} px ({split} split): '
                            'mmseg\'s LoadAnnotations squeezes a 1-pixel side away, and the '
                            'label map then no longer fits its image. Remove the pair '
                            f'({img_path}) or give it at least 2x2 px.')
                    if img_size and seg_size and img_size != seg_size:
                        raise ValueError(
                            f'{img_path} is {img_size[0]}x{img_size[1]} px but its label map '
                            f'{seg_path} is {seg_size[0]}x{seg_size[1]} px ({split} split): a '
                            'label map must have its image\'s size. Resize the label map with '
                            'nearest-neighbour interpolation (or the image), or remove the pair.')


def weight_configs(node) -> Iterator[dict]:
    """Every config dict in ``node`` whose registered class finds its own weights
    (``find_weights``: the trunks, the CTS policy)."""
    if isinstance(node, (dict, ConfigDict)):
        cls = MODELS.get(node['type']) if isinstance(node.get('type'), str) else None
        if cls is not None and hasattr(cls, 'find_weights'):
            yield node
        for v in node.values():
            yield from weight_configs(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from weight_configs(v)


def preflight(cfg: Config, splits=('train', 'val', 'test'), weights: bool = True):
    """Raise one clear error if a dataset folder is missing; fetch (or explain how to get) the
    pretrained trunk weights the model will load in ``init_weights()``. The splits' contents
    are checked (:func:`check_dataset_contents`) before any download."""
    missing = missing_data(cfg, splits)
    if missing:
        dataset = (cfg.get('train_dataloader') or cfg.get('test_dataloader'))['dataset']
        raise FileNotFoundError(
            'Dataset not found: ' + ', '.join(missing) + '\n'
            f'Prepare {dataset.get("type", "the dataset")} as in {PREPARE_DOCS} '
            '(paths are relative to the working directory), or point the config at it, e.g. '
            "--cfg-options train_dataloader.dataset.data_root=/path val_dataloader.dataset.data_root=/path")
    check_dataset_contents(cfg, splits)
    # Before the process group exists: one process per node downloads missing weights now; the
    # others get them in init_weights() once it has (resolve_weights_once_per_node).
    if weights and local_rank() == 0:
        for node in weight_configs(cfg.model):
            MODELS.get(node['type']).find_weights(node)
