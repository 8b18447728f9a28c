"""Which method runs on which trunk: the support matrix, built from what is registered.

    python tools/support_matrix.py                  # the matrix as text
    python tools/support_matrix.py --markdown       # the README's table (docs/support_matrix.md)
    python tools/support_matrix.py --update         # rewrite that table in both files
    python tools/support_matrix.py --check [--methods vitsplit lora] [--trunks eva02]

The matrix states what the tests (tests/conformance/) hold true: a cell is supported, or refused
at build time for the reason given. ``--check`` runs the cells' conformance checks here and
prints what each cell actually does (and how long it took); it exits 1 when a cell fails or
disagrees with the matrix.
"""
import argparse
import logging
import os.path as osp
import sys
import traceback

from mmengine.logging import MMLogger

from mmseg_custom.utils import support_matrix as sm

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
README = osp.join(REPO, 'README.md')
DOCS = osp.join(REPO, 'docs', 'support_matrix.md')


def update():
    """Write the markdown table into docs/support_matrix.md and between the README's markers."""
    table = sm.render_markdown()
    with open(README) as f:
        text = f.read()
    if sm.readme_section(text) is None:
        sys.exit(f'{README} has no support-matrix markers; put these two lines where the table '
                 f'goes:\n{sm.MARKER_BEGIN}\n{sm.MARKER_END}')
    begin = text.index(sm.MARKER_BEGIN) + len(sm.MARKER_BEGIN)
    with open(README, 'w') as f:
        f.write(text[:begin] + '\n' + table + text[text.index(sm.MARKER_END):])
    with open(DOCS, 'w') as f:
        f.write(table)
    print(f'wrote the table into {README} and {DOCS}')


def check(methods, trunks) -> bool:
    """Run the checks of the chosen cells; print one line per cell. True if all agree."""
    ok = True
    for m in [sm.method(k) for k in methods] if methods else sm.METHODS:
        for t in [sm.trunk_family(k) for k in trunks] if trunks else sm.TRUNKS:
            expected = sm.EXPECTED_REFUSALS.get((m.key, t.key))
            try:
                result = sm.check_cell(m, t)
            except Exception as err:  # noqa: BLE001 (a failing cell; the others still run)
                where = traceback.extract_tb(err.__traceback__)[-1]
                line = (f'ERROR {type(err).__name__}: {err} '
                        f'({osp.relpath(where.filename, REPO)}:{where.lineno})')
                result = None
            if result is None:
                good = False
            elif result.status == 'refused':
                good = expected is not None
                line = f'refused ({result.seconds:.1f} s): {result.message}'
                if not good:
                    line += '  <- the matrix says supported'
            else:
                good = expected is None and not result.failures
                line = f'supported ({result.seconds:.1f} s)'
                if expected is not None:
                    line += f'  <- the matrix says refused: {expected}'
                if result.failures:
                    line = 'FAILED ' + line + ''.join('\n    ' + f for f in result.failures)
            ok &= good
            print(f'{m.key:>14} x {t.key:<16} {line}', flush=True)
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--markdown', action='store_true', help="print the README's table")
    parser.add_argument('--update', action='store_true',
                        help='write the table into README.md and docs/support_matrix.md')
    parser.add_argument('--check', action='store_true', help="run the cells' checks")
    parser.add_argument('--methods', nargs='+', choices=[m.key for m in sm.METHODS])
    parser.add_argument('--trunks', nargs='+', choices=[t.key for t in sm.TRUNKS])
    args = parser.parse_args()
    # Building a model logs every parameter's initialisation: only the results are wanted here.
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    missing = sm.uncovered_parts()
    if missing:
        print(f'warning: registered parts no cell uses (add them to the matrix): {missing}',
              file=sys.stderr)
    if args.update:
        update()
    elif args.check:
        sys.exit(0 if check(args.methods, args.trunks) else 1)
    else:
        print(sm.render_markdown() if args.markdown else sm.render_text(), end='')


if __name__ == '__main__':
    main()
