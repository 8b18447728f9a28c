"""Data sets: the procedural shapes data of the embedded demo."""
from .shapes import SyntheticShapesDataset
from .synthetic_shapes import generate_dataset, generate_sample

__all__ = ['SyntheticShapesDataset', 'generate_dataset', 'generate_sample']
