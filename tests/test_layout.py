"""The dependency direction of the three packages: runtime <- training, runtime <- serving, and the Bento."""

from __future__ import annotations

import ast
import re
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


def imported_modules(path: Path) -> set[str]:
    """Full dotted name of every absolute import in a module (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_the_bento_installs_every_package_the_service_imports() -> None:
    """Follow the service's imports through runtime/ and serving/; every third-party package they reach must be
    in bentofile.yaml's list or come with BentoML itself (a missing one only fails inside the container)."""
    import sys
    from importlib import metadata

    seen, todo, third_party = set(), ["serving.service"], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.is_file():  # a package, or a name imported from a module rather than a module
            path = ROOT / module.replace(".", "/") / "__init__.py"
            if not path.is_file():
                continue
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top in ("runtime", "serving"):
                todo.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    distributions = metadata.packages_distributions()
    needed = {distributions.get(top, [top])[0].lower().replace("_", "-") for top in third_party}
    packages = yaml.safe_load((ROOT / "bentofile.yaml").read_text(encoding="utf-8"))["python"]["packages"]
    listed = {ast.literal_eval(repr(p)).split(">")[0].split("<")[0].split("=")[0].strip().lower() for p in packages}
    with_bentoml, pending = set(), ["bentoml"]  # what installing BentoML installs (extras aside)
    while pending:
        name = pending.pop()
        if name in with_bentoml:
            continue
        with_bentoml.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        pending += [re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0].lower().replace("_", "-")
                    for req in requires if "extra ==" not in req]
    assert not needed - listed - with_bentoml, sorted(needed - listed - with_bentoml)
