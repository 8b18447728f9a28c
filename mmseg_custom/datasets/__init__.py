"""Data sets: the procedural shapes data of the embedded demo; Rein's driving scenes."""
from .driving import ACDCDataset, GTAVDataset, MapillaryCityscapesDataset
from .shapes import SyntheticShapesDataset
from .synthetic_shapes import generate_dataset, generate_sample

__all__ = [
    'ACDCDataset', 'GTAVDataset', 'MapillaryCityscapesDataset', 'SyntheticShapesDataset',
    'generate_dataset', 'generate_sample'
]
