"""The code in README.md and docs/ runs as written."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_python_blocks_run(document):
    blocks = re.findall(r"```python\n(.*?)```", document.read_text(), re.S)
    namespace = {}
    for block in blocks:  # blocks of one document share a namespace, like a reader's session
        exec(compile(block, str(document), "exec"), namespace)
