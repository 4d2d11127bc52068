"""Run a notebook's code cells one by one in one namespace, as a kernel would.

``python -m tests.v1_notebook NOTEBOOK [CHECK.py]`` executes each code cell
in order in the current directory, then ``CHECK.py`` (assertions written in
v1 terms) in the same namespace. IPython syntax in cells is handled as a
kernel would: ``%%writefile F`` writes the cell, ``%%time`` runs the rest,
``%matplotlib`` lines are skipped (the Agg backend is used), ``!cmd`` runs a
shell command, and a last bare expression is shown (its repr is printed, as
a kernel displays it). Exits 1 naming the failing cell.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any


def code_cells(path: Path) -> list[tuple[int, str]]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return [(i, "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
            for i, c in enumerate(notebook["cells"]) if c["cell_type"] == "code"]


def run_cell(source: str, namespace: dict[str, Any]) -> None:
    lines = source.splitlines()
    if lines and lines[0].startswith("%%writefile"):
        Path(lines[0].split(None, 1)[1].strip()).write_text("\n".join(lines[1:]) + "\n")
        return
    if lines and lines[0].startswith("%%"):
        lines = lines[1:]  # %%time and the like: run the cell itself
    python = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("%"):
            continue
        if stripped.startswith("!"):
            subprocess.run(stripped[1:], shell=True, check=False)
            continue
        python.append(line)
    tree = ast.parse("\n".join(python))
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    if last is not None:
        tree.body.pop()
    exec(compile(tree, "<cell>", "exec"), namespace)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)
        if value is not None:
            print(repr(value))


def main(argv: list[str]) -> int:
    import matplotlib

    matplotlib.use("Agg")
    notebook = Path(argv[0])
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for index, source in code_cells(notebook):
        print(f"--- cell {index}", flush=True)
        try:
            run_cell(source, namespace)
        except Exception:
            traceback.print_exc()
            print(f"FAILED: {notebook.name} cell {index}", flush=True)
            return 1
        sys.stdout.flush()
    if len(argv) > 1:
        print("--- checks", flush=True)
        exec(compile(Path(argv[1]).read_text(encoding="utf-8"), argv[1], "exec"), namespace)
    print("NOTEBOOK DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
