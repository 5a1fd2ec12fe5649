"""The science library (fisa.models, fisa.data, fisa.metrics) and its utilities import nothing
from the programs that run it (fisa.engine, analysis): a notebook can import a model or a
dataset without the training code. Checked on the source (AST), imports inside functions included."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("fisa/models", "fisa/data", "fisa/metrics", "fisa/utils")
UPWARD = ("fisa.engine", "analysis")


def imported_modules(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in `path`, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = list(path.relative_to(root).parts[:-1])  # the module's package
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            # `from fisa import engine` imports fisa.engine
            out += [(node.lineno, f"{base}.{a.name}" if base else a.name) for a in node.names]
            out.append((node.lineno, base))
    return out


def upward_imports(root: Path = REPO) -> list[str]:
    found = []
    for folder in LIBRARY:
        for path in sorted((root / folder).rglob("*.py")):
            for line, module in imported_modules(path, root):
                if any(module == up or module.startswith(up + ".") for up in UPWARD):
                    found.append(f"{path.relative_to(root)}:{line}: imports {module}")
    return found


def test_library_imports_no_engine_nor_analysis():
    assert upward_imports() == [], "library modules import the programs that run them"


@pytest.mark.parametrize("source", ["from fisa.engine.pretrain_clip import pretrain_clip",
                                    "import analysis.tables", "from fisa import engine",
                                    "from ..engine import train"])
def test_the_scan_finds_an_upward_import(tmp_path, source):
    # the check itself can fail: the same scan over a copy holding one upward import
    module = tmp_path / "fisa" / "models" / "bad.py"
    module.parent.mkdir(parents=True)
    module.write_text(f"def f():\n    {source}\n")
    assert upward_imports(tmp_path) == [f"fisa/models/bad.py:2: imports {m}" for m in _expected(source)]


def _expected(source):
    return {"from fisa.engine.pretrain_clip import pretrain_clip": ["fisa.engine.pretrain_clip.pretrain_clip",
                                                                    "fisa.engine.pretrain_clip"],
            "import analysis.tables": ["analysis.tables"],
            "from fisa import engine": ["fisa.engine"],
            "from ..engine import train": ["fisa.engine.train", "fisa.engine"]}[source]
