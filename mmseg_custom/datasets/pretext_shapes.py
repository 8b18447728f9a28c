"""The pretext data of the tiny trunks' pretraining (``tools/pretrain_tiny_trunk.py``).

Formula-driven supervised pretraining (after Kataoka et al.'s FractalDB / Radial Contour DB, which
pretrain ViTs on drawn images with labels that come for free): images of shapes and textures that
are NOT the demo's classes, drawn in torch a whole batch at a time, with three dense labels per
pixel: the shape family, the fill texture and the objects' outlines. The demo's classes (circle,
triangle, square, stripes, checker) never appear: a trunk pretrained here has to transfer what it
learnt (edges, corners, curvature, periodic patterns) to them, as an ImageNet trunk transfers to
ADE20K.

* shapes: ellipse (elongated), pentagon/hexagon, star, cross, ring, crescent;
* textures: plain, dots, concentric waves, speckle, linear gradient;
* backgrounds: a random two-colour gradient with low-frequency blotches; per-image pixel noise.

Everything is drawn from one ``torch.Generator``: a batch depends only on its state.
"""
import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

SHAPES = ('background', 'ellipse', 'polygon', 'star', 'cross', 'ring', 'crescent')
TEXTURES = ('background', 'plain', 'dots', 'waves', 'speckle', 'gradient')
MAX_OBJECTS = 3


def _uniform(gen, shape, low, high):
    return low + (high - low) * torch.rand(shape, generator=gen)


def _shape_masks(u, v, radius, extra):
    """Masks (B, S, S) of every shape family, in each object's own frame (u, v)."""
    r = torch.sqrt(u**2 + v**2)
    phi = torch.atan2(v, u)
    R = radius[:, None, None]
    aspect = 0.35 + 0.25 * extra[:, 0, None, None]
    ellipse = (u / (R * 1.3))**2 + (v / (R * 1.3 * aspect))**2 <= 1
    sides = 5 + (extra[:, 1, None, None] > 0.5).float()  # pentagon or hexagon
    sector = 2 * math.pi / sides
    polygon = r * torch.cos(torch.remainder(phi, sector) - sector / 2) <= R * torch.cos(
        sector / 2)
    points = 4 + torch.floor(3 * extra[:, 2, None, None])  # 4 to 6 points
    star = r <= R * (0.7 + 0.35 * torch.cos(points * phi))
    arm = 0.32 * R
    cross = ((u.abs() <= arm) & (v.abs() <= R)) | ((v.abs() <= arm) & (u.abs() <= R))
    ring = (r <= R) & (r >= R * (0.5 + 0.15 * extra[:, 3, None, None]))
    crescent = (r <= R) & ((u - 0.5 * R)**2 + v**2 >= (0.85 * R)**2)
    return torch.stack([ellipse, polygon, star, cross, ring, crescent], dim=1)


def _texture_weights(gen, u, v, size):
    """Mixing weights (B, T, S, S) in [0, 1] between an object's two colours, per texture."""
    b = u.shape[0]
    period = _uniform(gen, (b, 1, 1), 7.0, 13.0)
    r = torch.sqrt(u**2 + v**2)
    plain = torch.zeros_like(u)
    du, dv = torch.remainder(u, period) - period / 2, torch.remainder(v, period) - period / 2
    dots = ((du**2 + dv**2) <= (0.3 * period)**2).float()
    waves = 0.5 + 0.5 * torch.sin(2 * math.pi * r / period)
    coarse = torch.rand((b, 1, size // 2, size // 2), generator=gen) > 0.5
    speckle = F.interpolate(coarse.float(), size=(size, size), mode='nearest')[:, 0]
    gradient = torch.clamp(0.5 + u / (2 * size * 0.3), 0, 1)
    return torch.stack([plain, dots, waves, speckle, gradient], dim=1)


def _background(gen, b, size, yy, xx):
    angle = _uniform(gen, (b, 1, 1), 0, 2 * math.pi)
    t = (torch.cos(angle) * (xx - 0.5) + torch.sin(angle) * (yy - 0.5)) * math.sqrt(2) + 0.5
    c0, c1 = _uniform(gen, (2, b, 3, 1, 1), 0, 255)
    img = c0 + t[:, None] * (c1 - c0)
    blotch = torch.randn((b, 3, 5, 5), generator=gen) * 25
    return img + F.interpolate(blotch, size=(size, size), mode='bilinear', align_corners=False)


def pretext_batch(gen: torch.Generator, batch: int, size: int = 112
                  ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Draw ``batch`` images and their dense labels.

    Args:
        gen (torch.Generator): the only source of randomness (CPU generator).
        batch (int): number of images.
        size (int): image side in pixels. Default 112.

    Returns:
        tuple: RGB images (B, 3, S, S) float in [0, 255], and a dict of (B, S, S) labels:
        ``shape`` (long, index into ``SHAPES``), ``texture`` (long, into ``TEXTURES``),
        ``edge`` (bool, the outline of every object, where its label differs from a neighbour).
    """
    axis = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(axis, axis, indexing='ij')
    img = _background(gen, batch, size, yy / (size - 1), xx / (size - 1))
    shape = torch.zeros((batch, size, size), dtype=torch.long)
    texture = torch.zeros_like(shape)
    instance = torch.zeros_like(shape)
    for k in range(MAX_OBJECTS):
        present = (torch.rand(batch, generator=gen) < 0.8) | (k == 0)
        radius = _uniform(gen, (batch, ), 0.16, 0.28) * size
        cy, cx = _uniform(gen, (2, batch, 1, 1), 0.2 * size, 0.8 * size)
        theta = _uniform(gen, (batch, 1, 1), 0, 2 * math.pi)
        dy, dx = yy - cy, xx - cx
        u = torch.cos(theta) * dx + torch.sin(theta) * dy
        v = -torch.sin(theta) * dx + torch.cos(theta) * dy
        masks = _shape_masks(u, v, radius, torch.rand((batch, 4), generator=gen))
        cls = torch.randint(1, len(SHAPES), (batch, ), generator=gen)
        mask = masks[torch.arange(batch), cls - 1] & present[:, None, None]
        tex = torch.randint(1, len(TEXTURES), (batch, ), generator=gen)
        weight = _texture_weights(gen, u, v, size)[torch.arange(batch), tex - 1]
        col1, col2 = _uniform(gen, (2, batch, 3, 1, 1), 0, 255)
        fill = col1 + weight[:, None] * (col2 - col1)
        img = torch.where(mask[:, None], fill, img)
        shape = torch.where(mask, cls[:, None, None], shape)
        texture = torch.where(mask, tex[:, None, None], texture)
        instance = torch.where(mask, torch.full_like(instance, k + 1), instance)
    noise = _uniform(gen, (batch, 1, 1, 1), 2.0, 8.0)
    img = (img + noise * torch.randn(img.shape, generator=gen)).clamp(0, 255).round()
    return img, dict(shape=shape, texture=texture, edge=_outline(instance))


def _outline(instance: torch.Tensor) -> torch.Tensor:
    """Pixels whose 4-neighbourhood holds another instance (object or background)."""
    padded = F.pad(instance[:, None].float(), (1, 1, 1, 1), mode='replicate')[:, 0]
    centre = padded[:, 1:-1, 1:-1]
    edge = torch.zeros_like(instance, dtype=torch.bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= padded[:, dy:dy + instance.shape[1], dx:dx + instance.shape[2]] != centre
    return edge
