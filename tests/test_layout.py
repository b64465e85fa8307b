"""The dependency direction of the three packages: runtime <- training, runtime <- serving, and the Bento."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def imported_packages(path: Path) -> set[str]:
    """Top-level package of every import in a module, function-level imports included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package, forbidden", [("runtime", {"training", "serving"}), ("serving", {"training"})])
def test_imports_run_one_way(package: str, forbidden: set[str]) -> None:
    offenders = {str(path.relative_to(ROOT)): sorted(imported_packages(path) & forbidden)
                 for path in sorted((ROOT / package).glob("*.py")) if imported_packages(path) & forbidden}
    assert not offenders, offenders


def test_the_bento_carries_no_training_code() -> None:
    include = yaml.safe_load((ROOT / "bentofile.yaml").read_text(encoding="utf-8"))["include"]
    assert not [pattern for pattern in include if pattern.startswith("training")], include
    assert "runtime/*.py" in include and "serving/*.py" in include


def test_a_module_that_imports_training_is_caught(tmp_path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from training.train import main\n    import serving.batch\n", encoding="utf-8")
    assert imported_packages(module) == {"training", "serving"}
