"""The package's import direction: a lower layer never imports a higher one."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "src" / "fcnseg"

# What each part may import from fcnseg (besides itself and the base modules errors,
# atomic and cache).
ALLOWED = {
    "nets": {"nets"},
    "data": {"data", "nets"},
    "train": {"train", "data", "nets"},
    "deploy": {"deploy", "train", "data", "nets"},
    "serve": {"serve", "deploy", "train", "data", "nets"},
    "report": {"report", "deploy", "train", "data", "nets"},
}
FORBIDDEN_MODULES = {"deploy": {"fcnseg.train.engine"}, "serve": {"fcnseg.train.engine"}}


def imports_of(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fcnseg"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fcnseg"))
    return found


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_imports_run_one_way(part):
    files = sorted((PACKAGE / part).rglob("*.py"))
    assert files
    for path in files:
        for module in imports_of(path):
            if module in ("fcnseg.errors", "fcnseg.atomic", "fcnseg.cache"):
                continue
            parts = module.split(".")
            assert len(parts) > 1 and parts[1] in ALLOWED[part], f"{path.name} imports {module}"
            assert module not in FORBIDDEN_MODULES.get(part, set()), f"{path.name}: {module}"


def test_the_checker_sees_imports(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from fcnseg.train.engine import train\nimport fcnseg.deploy\n")
    assert imports_of(bad) == {"fcnseg.train.engine", "fcnseg.deploy"}
