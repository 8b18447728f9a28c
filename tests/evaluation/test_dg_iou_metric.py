"""Per-domain IoU (Rein's DGIoUMetric) and the driving data set classes."""
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.evaluation import IoUMetric
from mmseg.registry import DATASETS
from PIL import Image

import mmseg_custom  # noqa: F401
from mmseg_custom.evaluation import DGIoUMetric

CLASSES = tuple(f'c{i}' for i in range(3))


def sample(path, pred, gt):
    return dict(seg_map_path=path, pred_sem_seg=dict(data=pred[None]),
                gt_sem_seg=dict(data=gt[None]))


def test_each_domain_gets_the_iou_of_its_own_samples():
    g = torch.Generator().manual_seed(0)
    domains = {'citys': 'data/cityscapes/gtFine/val/a.png', 'bdd': 'data/bdd100k/labels/b.png'}
    batches = {d: [(torch.randint(0, 3, (6, 7), generator=g), torch.randint(0, 3, (6, 7),
                                                                           generator=g))
                   for _ in range(3)] for d in domains}
    metric = DGIoUMetric(dataset_keys=list(domains), iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=CLASSES)
    # Mixed batches: each sample is matched by its own path.
    for i in range(3):
        metric.process({}, [sample(domains[d], *batches[d][i]) for d in domains])
    result = metric.evaluate(6)
    means = []
    for d in domains:
        ref = IoUMetric(iou_metrics=['mIoU'])
        ref.dataset_meta = dict(classes=CLASSES)
        ref.process({}, [sample(domains[d], *b) for b in batches[d]])
        expected = ref.evaluate(3)['mIoU']
        assert result[f'{d}_mIoU'] == pytest.approx(expected)
        means.append(expected)
    assert result['mean_mIoU'] == pytest.approx(sum(means) / 2)


def test_dataset_keys_are_required():
    with pytest.raises(ValueError, match='dataset_keys'):
        DGIoUMetric()


@pytest.mark.parametrize('name,img,seg', [
    ('GTAVDataset', '00001.png', '00001_labelTrainIds.png'),
    ('MapillaryCityscapesDataset', 'x.jpg', 'x.png'),
    ('ACDCDataset', 'GOPR0475_frame_000041_rgb_anon.png',
     'GOPR0475_frame_000041_gt_labelTrainIds.png'),
])
def test_driving_datasets_pair_their_files(tmp_path, name, img, seg):
    init_default_scope('mmseg')
    os.makedirs(tmp_path / 'img' / 'seq')
    os.makedirs(tmp_path / 'ann' / 'seq')
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / 'img' / 'seq' / img)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / 'ann' / 'seq' / seg)
    ds = DATASETS.build(dict(type=name, data_root=str(tmp_path),
                             data_prefix=dict(img_path='img', seg_map_path='ann'), pipeline=[]))
    assert len(ds) == 1 and len(ds.metainfo['classes']) == 19
    assert osp.basename(ds[0]['seg_map_path']) == seg
