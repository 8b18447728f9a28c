"""mmseg-vitsplit: ViT-Split for MMSegmentation 1.x.

Importing this package (``custom_imports=dict(imports=['mmseg_custom'])``) registers its models,
datasets and hooks in mmseg's registries.
"""
from . import datasets, engine, evaluation, models, ops, utils  # noqa: F401 (registers modules)

__version__ = '0.1.0'
