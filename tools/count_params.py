"""Total and trainable parameters of configs, per module group, without allocating weights.

    python tools/count_params.py CONFIG [CONFIG ...] [--json OUT]

Models are built on the meta device, so even the giant config is counted instantly.
"""
import argparse
import json

from mmengine.config import Config

import mmseg_custom  # noqa: F401 (registers the models)
from mmseg_custom.utils.params import build_on_meta, count_params


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--json', help='also write the counts to this JSON file')
    parser.add_argument('--markdown', action='store_true',
                        help='print one markdown table row per config instead of the groups')
    args = parser.parse_args()
    results = {}
    if args.markdown:
        print('| config | trainable | total | trainable in backbone |\n|---|---:|---:|---:|')
    for path in args.configs:
        groups = count_params(build_on_meta(Config.fromfile(path)))
        results[path] = groups
        if args.markdown:
            # The backbone's share: Reins / PEFT adapters, as Rein's table counts them.
            in_backbone = sum(g['trainable'] for k, g in groups.items() if k.startswith('backbone'))
            print(f'| `{path}` | {groups["all"]["trainable"]:,} | {groups["all"]["total"]:,} '
                  f'| {in_backbone:,} |')
            continue
        print(f'\n{path}')
        print(f'  {"group":<24}{"total":>16}{"trainable":>16}')
        for name, g in groups.items():
            print(f'  {name:<24}{g["total"]:>16,}{g["trainable"]:>16,}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
