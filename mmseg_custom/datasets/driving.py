"""Driving-scene data sets of Rein's domain-generalisation benchmarks, in Cityscapes' 19 classes.

mmseg has Cityscapes and BDD100K (``BDD100KDataset``, Cityscapes classes); these add the others
the official Rein configs read as ``CityscapesDataset`` with changed file suffixes. Labels are
Cityscapes train ids (255 = ignore): GTAV and Mapillary labels must first be converted with
Rein's ``tools/convert_datasets/gta.py`` and ``mapillary2cityscape.py`` (github w1oves/Rein).
"""
from mmseg.datasets import CityscapesDataset
from mmseg.registry import DATASETS


@DATASETS.register_module()
class GTAVDataset(CityscapesDataset):
    """GTAV (Richter et al., 2016): ``images/*.png``, ``labels/*_labelTrainIds.png``."""

    def __init__(self, img_suffix='.png', seg_map_suffix='_labelTrainIds.png', **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)


@DATASETS.register_module()
class MapillaryCityscapesDataset(CityscapesDataset):
    """Mapillary Vistas v1.2 relabelled to the 19 Cityscapes classes: ``*.jpg`` images,
    ``*.png`` train-id labels (Rein evaluates on the validation set resized to half)."""

    def __init__(self, img_suffix='.jpg', seg_map_suffix='.png', **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)


@DATASETS.register_module()
class ACDCDataset(CityscapesDataset):
    """ACDC (Sakaridis et al., 2021), one condition per instance: images
    ``rgb_anon/<fog|night|rain|snow>/<split>/<seq>/*_rgb_anon.png``, labels
    ``gt/<condition>/<split>/<seq>/*_gt_labelTrainIds.png``."""

    def __init__(self, img_suffix='_rgb_anon.png', seg_map_suffix='_gt_labelTrainIds.png',
                 **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)
