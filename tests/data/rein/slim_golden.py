"""Write ``rein_small_citys.golden.pt`` here from the fixture made with the official Rein code.

    python tests/data/rein/slim_golden.py /path/to/fixtures/rein/rein_small_citys.golden.pt

The fixture (official w1oves/Rein@7da85bc, see ``README.md``) holds full-size fp32 logits (4.8
MB); the tests need the fp64 logits on its sampling grid, the fp32 logits on the same grid, the
backbone features, the linked queries and the official trainable counts, kept here unchanged.
"""
import sys

import torch


def main(src, dst='rein_small_citys.golden.pt'):
    g = torch.load(src, weights_only=True)
    o, s = g['fp64_grid']
    keep = ['inputs', 'img_metas', 'seg_logits_fp64', 'fp64_grid', 'fp32_vs_fp64_max_abs',
            'backbone_feats', 'feat_scales', 'reins_querys', 'trainable', 'info']
    out = {k: g[k] for k in keep}
    out['seg_logits_fp32_grid'] = [x[..., o::s, o::s].clone() for x in g['seg_logits']]
    torch.save(out, dst)


if __name__ == '__main__':
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    main(*sys.argv[1:])
