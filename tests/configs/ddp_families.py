"""Each model family trains two iterations under DDP (run by test_ddp_families.py with torchrun).

    python -m torch.distributed.run --nproc_per_node 2 ddp_families.py DATA_ROOT WORK_DIR

DATA_ROOT holds a synthetic shapes data set (mmseg_custom.datasets). Each family is its shipped
config at toy width (tiny_models.py), run by PortableRunner as tools/train.py runs it, with
mmengine's default DDP (find_unused_parameters=False), so a trainable parameter that gets no
gradient stops the run at the second iteration.
"""
import argparse
import os.path as osp

from mmengine.dist import get_rank
from tiny_models import tiny_config

import mmseg_custom  # noqa: F401
from mmseg_custom.datasets.synthetic_shapes import CLASSES
from mmseg_custom.engine import PortableRunner, close_process_group

FAMILIES = {
    'vitsplit': 'ade20k/vitsplit/linear_dinov2_vitsplit_small_512_20k_ade20k.py',
    'gate': 'ade20k/vitsplit/linear_dinov2_vitsplit_sparsegate_small_512_20k_ade20k.py',
    'frozen': 'ade20k/baselines/linear_dinov2_frozen_small_512_40k_ade20k.py',
    'finetune': 'ade20k/baselines/linear_dinov2_finetune_small_512_40k_ade20k.py',
    'mask2former': 'ade20k/vitsplit/mask2former_dinov2_vitsplit_small_512_40k_ade20k.py',
    # The adapter methods on their linear configs (their Mask2Former configs are depth 24):
    # Rein (LoRA reins after every block) and LoRA inside the trunk (PEFTOptimWrapperConstructor).
    'rein': 'ade20k/rein/linear_dinov2_rein_small_512_40k_ade20k.py',
    'lora': 'ade20k/peft/linear_dinov2_lora_small_512_40k_ade20k.py',
    # EoMT (queries in the fine-tuned trunk's last blocks) and ViT-Split-EoMT (in the task head).
    'eomt': 'ade20k/eomt/eomt_dinov2_large_512_40k_ade20k.py',
    'vitsplit_eomt': 'ade20k/vitsplit_eomt/eomt_dinov2_vitsplit_small_512_40k_ade20k.py',
}


def family_config(family, data_root, work_dir):
    cfg = tiny_config(FAMILIES[family], num_classes=len(CLASSES))
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                dict(type='PackSegInputs')]
    cfg.train_dataloader = dict(
        batch_size=1, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=True),
        dataset=dict(type='SyntheticShapesDataset', data_root=data_root, pipeline=pipeline,
                     data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train')))
    for split in ('val', 'test'):
        cfg[f'{split}_dataloader'] = cfg[f'{split}_evaluator'] = cfg[f'{split}_cfg'] = None
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=100)
    cfg.default_hooks.checkpoint = None  # no checkpoint hook
    cfg.default_hooks.pop('visualization')
    cfg.update(work_dir=osp.join(work_dir, family), experiment_name=family, launcher='pytorch',
               randomness=dict(seed=0))
    cfg.visualizer.name = f'visualizer_{family}'
    return cfg


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('data_root')
    parser.add_argument('work_dir')
    parser.add_argument('--families', nargs='+', default=list(FAMILIES))
    args = parser.parse_args()
    for family in args.families:
        runner = PortableRunner.from_cfg(family_config(family, args.data_root, args.work_dir))
        runner.train()
        if get_rank() == 0:
            print(f'{family}: trained {runner.iter} iterations in {runner.world_size} processes',
                  flush=True)
    close_process_group()


if __name__ == '__main__':
    main()
