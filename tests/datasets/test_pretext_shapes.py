"""The tiny trunks' pretext data: deterministic, consistent labels, outlines where they are."""
import torch

from mmseg_custom.datasets.pretext_shapes import SHAPES, TEXTURES, _outline, pretext_batch


def test_same_seed_same_batch_other_seed_other_batch():
    a = pretext_batch(torch.Generator().manual_seed(3), 4, size=56)
    b = pretext_batch(torch.Generator().manual_seed(3), 4, size=56)
    c = pretext_batch(torch.Generator().manual_seed(4), 4, size=56)
    assert torch.equal(a[0], b[0])
    assert all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    assert not torch.equal(a[0], c[0])


def test_labels_agree_and_cover_every_class():
    img, labels = pretext_batch(torch.Generator().manual_seed(0), 64, size=56)
    assert img.shape == (64, 3, 56, 56) and img.dtype == torch.float32
    assert img.min() >= 0 and img.max() <= 255 and torch.equal(img, img.round())
    shape, texture = labels['shape'], labels['texture']
    # an object pixel has a shape and a texture; a background pixel has neither
    assert torch.equal(shape > 0, texture > 0)
    assert set(shape.unique().tolist()) == set(range(len(SHAPES)))
    assert set(texture.unique().tolist()) == set(range(len(TEXTURES)))
    # every image holds at least one object, and objects' outlines are marked
    assert ((shape > 0).flatten(1).any(1)).all()
    assert labels['edge'][shape > 0].any() and labels['edge'].float().mean() < 0.2


def test_outline_marks_both_sides_of_a_border_only():
    inst = torch.zeros(1, 6, 6, dtype=torch.long)
    inst[0, 2:4, 2:4] = 1
    expected = torch.zeros(1, 6, 6, dtype=torch.bool)
    expected[0, 1:5, 2:4] = True  # above, inside, below the 2x2 square
    expected[0, 2:4, 1:5] = True  # left and right of it
    assert torch.equal(_outline(inst), expected)
