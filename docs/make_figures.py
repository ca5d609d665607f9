"""Make the tutorial's figures by running its code: ``python docs/make_figures.py [--out DIR]``.

Runs the Python blocks of ``docs/tutorial.md`` in order, in one namespace, as the tests do, and
after each block marked ``# figure: NAME.png`` saves its ``figure`` to DIR/NAME.png (default:
``docs/figures``), so the figures always show what the tutorial's code computes.
"""

import argparse
import pathlib
import re

import matplotlib

matplotlib.use("Agg")

DOCS = pathlib.Path(__file__).resolve().parent
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
MARKER = re.compile(r"#\s*figure:\s*(\S+\.png)")


def make_figures(out):
    """Run the tutorial's blocks, saving the marked figures under ``out``; their paths."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    namespace, written = {}, []
    for block in BLOCK.findall((DOCS / "tutorial.md").read_text()):
        exec(compile(block, "tutorial.md", "exec"), namespace)
        marker = MARKER.search(block)
        if marker:
            path = out / marker.group(1)
            namespace["figure"].savefig(path, dpi=80)
            written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DOCS / "figures")
    for path in make_figures(parser.parse_args().out):
        print(path)
