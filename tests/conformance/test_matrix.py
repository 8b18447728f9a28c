"""The support matrix holds: every method on every trunk family builds and passes the conformance
checks at toy width, or is refused at build time as the matrix says (mmseg_custom/utils/
support_matrix.py); nothing registered is missing from it; the README's table is the tool's."""
import glob
import os.path as osp
import runpy
import sys
from dataclasses import replace

import pytest
from mmengine.config import Config
from mmseg.registry import MODELS

from mmseg_custom.utils import support_matrix as sm

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def assert_names_method_and_trunk(message, m, t):
    assert any(n in message for n in sm.method_names(m, t)), (
        f'the refusal does not name the method (one of {sm.method_names(m, t)}): {message}')
    assert any(n in message for n in sm.trunk_names(t)), (
        f'the refusal does not name the trunk ({sm.trunk_names(t)}): {message}')


@pytest.mark.parametrize('m,t', list(sm.cells()), ids=[f'{m.key}-{t.key}' for m, t in sm.cells()])
def test_cell(m, t):
    result = sm.check_cell(m, t)
    reason = sm.EXPECTED_REFUSALS.get((m.key, t.key))
    if result.status == 'refused':
        assert reason is not None, (
            f'{sm.row_label(m)} on {t.label} is refused at build time, but the matrix lists it as '
            f'supported: {result.message}')
        assert_names_method_and_trunk(result.message, m, t)
    else:
        assert reason is None, (
            f'{sm.row_label(m)} on {t.label} builds, but the matrix lists it as refused '
            f'({reason}): remove it from EXPECTED_REFUSALS')
        assert not result.failures, '\n'.join(result.failures)


def test_every_registered_part_is_in_the_matrix():
    assert sm.uncovered_parts() == [], (
        'registered backbone parts that no cell of the support matrix uses: add a method row '
        '(or a trunk family) for each to METHODS/TRUNKS in mmseg_custom/utils/support_matrix.py')


def test_every_shipped_backbone_and_head_pair_is_in_the_matrix():
    """A shipped config's backbone + head type pair (e.g. PEFTBackbone + Mask2FormerHead) is the
    combination a user runs: some row must check it."""
    sm.registered_parts()  # imports the modules that configs pull in by custom_imports
    pairs = set()
    for path in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True):
        if '_base_' in path.split(osp.sep):
            continue
        model = Config.fromfile(path).model
        pairs.add((model.backbone.type, model.decode_head.type))
    matrix = set()
    for m in sm.METHODS:
        cfg = sm.cell_config(m, sm.TRUNKS[0])
        matrix.add((cfg['backbone']['type'], cfg['decode_head']['type']))
    unknown = sorted(t for pair in pairs | matrix for t in pair if MODELS.get(t) is None)
    assert unknown == [], f'types not registered: {unknown}'
    resolve = {(MODELS.get(b), MODELS.get(h)) for b, h in matrix}
    missing = sorted(p for p in pairs if (MODELS.get(p[0]), MODELS.get(p[1])) not in resolve)
    assert missing == [], f'shipped backbone + head pairs no matrix row checks: {missing}'


def test_expected_refusals_name_cells_and_reasons():
    keys = {(m.key, t.key) for m, t in sm.cells()}
    assert set(sm.EXPECTED_REFUSALS) <= keys
    assert all(reason.strip() for reason in sm.EXPECTED_REFUSALS.values())


def test_checks_fail_a_no_op_adapter_and_a_wrong_trainable_set():
    """The checks catch what they are for: an adapter that changes nothing (AdaptFormer scaled
    by 0), and a method that trains more than its rule says (fine-tuning checked as frozen)."""
    dinov2 = sm.trunk_family('dinov2')
    no_op = replace(sm.method('adaptformer'), key='no_op', backbone=lambda t: dict(
        type='PEFTBackbone', trunk=t, out_indices=sm.LAST,
        adapter=dict(type='AdaptFormerAdapter', bottleneck=8, scale=0.0)))
    failures = sm.check_cell(no_op, dinov2).failures
    assert any(f.startswith('output:') for f in failures), failures
    assert any(f.startswith('non-zero gradient:') for f in failures), failures
    wrong = replace(sm.method('finetune'), key='wrong', trains=None)
    failures = sm.check_cell(wrong, dinov2).failures
    assert any(f.startswith('trainable set:') for f in failures), failures
    assert any(f.startswith('output:') for f in failures), failures


def test_a_build_time_refusal_is_reported_as_refused():
    dinov2 = sm.trunk_family('dinov2')
    nowhere = replace(sm.method('lora'), key='lora_nowhere', backbone=lambda t: dict(
        type='PEFTBackbone', trunk=t, out_indices=sm.LAST,
        adapter=dict(type='LoRAAdapter', target_modules=['no_such_layer'])))
    result = sm.check_cell(nowhere, dinov2)
    assert result.status == 'refused' and not result.failures
    assert_names_method_and_trunk(result.message, nowhere, dinov2)


def test_docs_table_is_the_tools_output():
    with open(osp.join(REPO, 'docs', 'support_matrix.md')) as f:
        assert f.read() == sm.render_markdown(), (
            'docs/support_matrix.md is stale: run python tools/support_matrix.py --update')


def test_readme_table_is_the_tools_output():
    with open(osp.join(REPO, 'README.md')) as f:
        section = sm.readme_section(f.read())
    assert section is not None, (
        f'README.md lacks the support-matrix markers:\n{sm.MARKER_BEGIN}\n{sm.MARKER_END}')
    assert section == sm.render_markdown(), (
        "README.md's support table is stale: run python tools/support_matrix.py --update")


def test_tool_prints_the_markdown_table(monkeypatch, capsys):
    tool = osp.join(REPO, 'tools', 'support_matrix.py')
    monkeypatch.setattr(sys, 'argv', [tool, '--markdown'])
    runpy.run_path(tool, run_name='__main__')
    assert capsys.readouterr().out == sm.render_markdown()
