"""The README and docs/ point at things that exist, and their commands parse.

* every relative link (and image) in README.md and docs/**/*.md names an existing file, and an
  anchor into a Markdown file names one of its headings;
* every config path (``configs/....py``, with ``*`` and ``{a,b}`` expanded) named there exists;
* every ``tools/*.py`` command in a ``bash`` block of README.md runs ``--help`` (in a subprocess,
  each tool once) with exit code 0, and each ``--flag`` the command uses appears in that help;
  the ``--flag``s of such commands in docs/ appear in the tool's source.
"""
import glob
import os
import os.path as osp
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
README = osp.join(REPO, 'README.md')
DOCS = sorted([README] + glob.glob(osp.join(REPO, 'docs', '**', '*.md'), recursive=True))

FENCE = re.compile(r'^(```|~~~)(\w*)[^\n]*\n(.*?)^\1[ \t]*$', re.M | re.S)
INLINE_LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
REFERENCE_DEF = re.compile(r'^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$', re.M)
# A config path, alone or after ../ (links from docs/), not the tail of another path.
CONFIG_PATH = re.compile(r'(?<![\w/.-])(?:\.\./)*(configs/[\w./*{},-]+?\.py)(?![\w])')
# Configs that tools/new_dataset.py writes into the user's checkout: not shipped.
GENERATED_CONFIGS = 'configs/custom/'
TOOL = re.compile(r'(?<![\w/.-])(tools/\w+\.py)')
FLAG = re.compile(r'(?<![\w-])(--[A-Za-z][\w-]*)')


def rel(path):
    return osp.relpath(path, REPO)


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def without_fences(text):
    """The Markdown text with its fenced blocks blanked out (line numbers kept)."""
    return FENCE.sub(lambda m: '\n' * m.group(0).count('\n'), text)


def without_code(text):
    """The Markdown text with fenced blocks and inline code spans blanked out."""
    return re.sub(r'`[^`\n]*`', '``', without_fences(text))


def slug(heading):
    """GitHub's anchor for a heading: a link keeps its text; lower case; punctuation other than
    hyphens and underscores dropped; spaces to hyphens."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading).strip().lower()
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def anchors(path):
    """The anchors of a Markdown file's headings (duplicates numbered as GitHub numbers them)."""
    seen, out = {}, set()
    for line in without_fences(read(path)).splitlines():
        m = re.match(r'^#{1,6}\s+(.*?)\s*#*\s*$', line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f'{base}-{n}')
    return out


def links(path):
    text = without_code(read(path))
    return INLINE_LINK.findall(text) + REFERENCE_DEF.findall(text)


def is_external(target):
    return re.match(r'^[a-zA-Z][\w+.-]*:', target) is not None  # http:, https:, mailto:, ...


@pytest.mark.parametrize('doc', DOCS, ids=rel)
def test_relative_links_exist(doc):
    problems = []
    for target in links(doc):
        if is_external(target):
            continue
        file_part, _, anchor = target.partition('#')
        dest = osp.normpath(osp.join(osp.dirname(doc), file_part)) if file_part else doc
        if not osp.exists(dest):
            problems.append(f'{target}: {rel(dest)} does not exist')
        elif anchor and dest.endswith('.md') and anchor not in anchors(dest):
            problems.append(f'{target}: {rel(dest)} has no heading with anchor #{anchor}')
    assert not problems, f'{rel(doc)} links to what is not there:\n  ' + '\n  '.join(problems)


def expand_braces(pattern):
    m = re.search(r'\{([^{}]*)\}', pattern)
    if not m:
        return [pattern]
    return [p for alt in m.group(1).split(',')
            for p in expand_braces(pattern[:m.start()] + alt + pattern[m.end():])]


def config_paths(path):
    return sorted({m for m in CONFIG_PATH.findall(read(path))
                   if not m.startswith(GENERATED_CONFIGS)})


@pytest.mark.parametrize('doc', DOCS, ids=rel)
def test_named_configs_exist(doc):
    missing = [f'{path} ({p})' if p != path else path
               for path in config_paths(doc) for p in expand_braces(path)
               if not glob.glob(osp.join(REPO, p))]
    assert not missing, f'{rel(doc)} names configs that do not exist:\n  ' + '\n  '.join(missing)


def bash_commands(path):
    """The logical lines (continuations joined, comments dropped) of a file's bash blocks."""
    lines = []
    for m in FENCE.finditer(read(path)):
        if m.group(2) not in ('bash', 'sh', 'shell', 'console'):
            continue
        body = re.sub(r'\\\n', ' ', m.group(3))
        for line in body.splitlines():
            line = re.sub(r'(^|\s)#.*$', '', line).strip()
            if line:
                lines.append(line)
    return lines


def tool_uses(docs):
    """{tool path: {flag: [where it is used]}, None: [files]} for every tools/*.py command in the
    bash blocks of ``docs``."""
    uses = {}
    for doc in docs:
        for line in bash_commands(doc):
            # Split at shell separators, so each tool gets only the flags of its own command.
            for command in re.split(r'&&|\|\||[|;&]', line):
                found = TOOL.search(command)
                if not found:
                    continue
                flags = uses.setdefault(found.group(1), {None: []})
                for flag in FLAG.findall(command[found.end():]):
                    flags.setdefault(flag, []).append(f'{rel(doc)}: {line}')
                flags[None].append(rel(doc))
    return uses


# The README's commands run --help (each tool once, about 10 s of CPU for the imports); the
# commands of docs/ are checked against the tools' source, which costs nothing.
README_TOOLS = tool_uses([README])
DOCS_TOOLS = tool_uses([d for d in DOCS if d != README])


def missing_tool(tool, uses):
    where = ', '.join(sorted(set(uses[tool][None])))
    return f'{tool} is used in {where} but does not exist (yet)'


def unknown_flags(tool, uses, text, what):
    unknown = {flag: places for flag, places in uses[tool].items()
               if flag is not None
               and not re.search(rf'(?<![\w-]){re.escape(flag)}(?![\w-])', text)}
    return f'{tool}: {what} lacks flags the docs use:\n' + '\n'.join(
        f'  {flag}: {places[0]}' for flag, places in sorted(unknown.items())) if unknown else ''


@pytest.fixture(scope='module')
def helps():
    """Each README tool's (exit code, --help output), run once, two at a time."""
    def run(tool):
        if not osp.isfile(osp.join(REPO, tool)):
            return tool, None
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [REPO] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
        proc = subprocess.run([sys.executable, tool, '--help'], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=300)
        return tool, (proc.returncode, proc.stdout)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, sorted(README_TOOLS)))


def test_readme_names_the_launchers():
    assert 'tools/train.py' in README_TOOLS and 'tools/demo.py' in README_TOOLS


@pytest.mark.parametrize('tool', sorted(README_TOOLS))
def test_readme_commands_parse(tool, helps):
    result = helps[tool]
    assert result is not None, missing_tool(tool, README_TOOLS)
    code, output = result
    assert code == 0, f'{tool} --help exited with {code}:\n{output[-3000:]}'
    problem = unknown_flags(tool, README_TOOLS, output, '--help')
    assert not problem, problem


@pytest.mark.parametrize('tool', sorted(DOCS_TOOLS))
def test_docs_commands_use_existing_flags(tool):
    path = osp.join(REPO, tool)
    assert osp.isfile(path), missing_tool(tool, DOCS_TOOLS)
    problem = unknown_flags(tool, DOCS_TOOLS, read(path), 'its source')
    assert not problem, problem
