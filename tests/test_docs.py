"""The code in README.md and docs/ runs as written."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


OPTIONAL_MODULES = {"matplotlib", "onnx", "onnxruntime", "safetensors", "torch", "keras"}
"""Packages of the extras (``[plot]``, ``[test]``) that a document's examples may need."""


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_python_blocks_run(document):
    blocks = re.findall(r"```python\n(.*?)```", document.read_text(), re.S)
    namespace = {}
    for block in blocks:  # blocks of one document share a namespace, like a reader's session
        try:
            exec(compile(block, str(document), "exec"), namespace)
        except ModuleNotFoundError as error:
            if error.name not in OPTIONAL_MODULES:
                raise
            pytest.skip(f"{document.name} needs {error.name}, not installed")


def test_tutorial_figures_are_made_by_its_script(tmp_path):
    """``docs/make_figures.py`` runs the tutorial and writes every figure the page shows; the
    committed copies exist too."""
    pytest.importorskip("matplotlib")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs/make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = {path.name for path in module.make_figures(tmp_path)}
    shown = set(re.findall(r"\]\(figures/([^)]+\.png)\)", (ROOT / "docs/tutorial.md").read_text()))
    assert shown and shown == written
    for name in shown:
        assert (tmp_path / name).stat().st_size > 1000
        assert (ROOT / "docs/figures" / name).is_file(), f"run python docs/make_figures.py ({name})"
