"""check_label_values: label values that name no class stop the run, naming file and values."""
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from mmseg_custom.engine import check_label_values


def sample(values, path='ann/0.png', **meta):
    data = torch.zeros(1, 4, 4, dtype=torch.uint8)
    data.view(-1)[:len(values)] = torch.tensor(values, dtype=torch.uint8)
    out = SegDataSample(metainfo=dict(seg_map_path=path, **meta))
    out.gt_sem_seg = PixelData(data=data)
    return out


def test_values_in_range_and_ignore_index_pass():
    check_label_values([sample([0, 1, 2, 255])], num_classes=3)
    check_label_values([sample([0, 1, 2, 0])], num_classes=3, ignore_index=0)
    check_label_values([SegDataSample()], num_classes=3)  # no labels (inference): nothing to check


def test_out_of_range_values_are_named_with_the_file():
    with pytest.raises(ValueError, match=r'ann/1.png: label values 3, 200 are not classes of '
                       r'this data set \(0..2\) nor the ignore index 255'):
        check_label_values([sample([0, 1]), sample([3, 200, 1], 'ann/1.png')], num_classes=3)


def test_test_time_augmentation_batches_are_checked():
    # TestTimeAug batches nest the samples by view.
    with pytest.raises(ValueError, match='ann/2.png: label values 9'):
        check_label_values([[sample([1])], [sample([9], 'ann/2.png')]], num_classes=3)


def test_reduce_zero_label_is_explained():
    with pytest.raises(ValueError, match='reduce_zero_label maps file value v to v - 1'):
        check_label_values([sample([150], reduce_zero_label=True)], num_classes=150)
