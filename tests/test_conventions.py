"""The repository's own rules (shared CONVENTIONS), made executable so they cannot drift back.

Each check is parametrised by project, so ``pytest tests -k spmix`` checks one project.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECTS = ["fpt_plus", "spmix", "fedlppa", "aslseg", "pamsr", "prior", "joinedtrans", "octa_iqa", "yolocurvseg"]
IMPLEMENTED = [p for p in PROJECTS if (ROOT / p / "train.py").is_file()]
PACKAGES = ["common", *PROJECTS]
TOP_LEVEL = {"experiment", "seed", "runs_root", "data", "model", "optim", "runtime"}
ENTRY_MODULES = {"train", "eval", "reproduce", "bench", "synth"}
# Dependencies whose names a module must not take (the standard library is checked from sys.stdlib_module_names).
DEPENDENCY_NAMES = {"torch", "torchvision", "timm", "monai", "albumentations", "pandas", "yaml", "tensorboard",
                    "sklearn", "skimage", "scipy", "cv2", "nibabel", "matplotlib", "safetensors", "tqdm", "flwr",
                    "segment_anything", "transformers", "h5py", "numpy", "PIL", "utils", "helpers", "misc"}
CITATION = re.compile(r"shared/specs|\bspecs?\b ?(§|section|[0-9])|§ ?[0-9]|\bissues? #?[0-9]", re.IGNORECASE)


def _sources(package: str, tests: bool = False) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    return [f for f in files if tests or "tests" not in f.relative_to(ROOT).parts]


def _text_files(package: str) -> list[Path]:
    return [f for f in sorted((ROOT / package).rglob("*")) if f.suffix in {".py", ".md", ".yaml", ".yml"}
            and "__pycache__" not in f.parts]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_over_60_lines(package):
    long = []
    for path in _sources(package):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "functions over 60 lines (split them into named steps):\n" + "\n".join(long)


@pytest.mark.parametrize("package", PACKAGES)
def test_cites_only_what_the_repository_contains_or_what_is_public(package):
    hits = [f"{f.relative_to(ROOT)}:{i}: {line.strip()[:100]}" for f in _text_files(package)
            for i, line in enumerate(f.read_text().splitlines(), 1) if CITATION.search(line)]
    assert not hits, ("cite the paper (section, equation, table), the official code (file, function) or an upstream "
                      "thread (owner/repo#N), not documents this repository does not contain:\n" + "\n".join(hits))


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_shadows_the_standard_library_or_a_dependency(package):
    bad = [str(f.relative_to(ROOT)) for f in _sources(package, tests=True)
           if f.stem in sys.stdlib_module_names or f.stem in DEPENDENCY_NAMES]
    assert not bad, f"rename these modules (they shadow a standard or third-party module): {bad}"


@pytest.mark.parametrize("package", PACKAGES)
def test_private_names_stay_in_their_module(package):
    uses = []
    for path in _sources(package, tests=False):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                uses += [f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{a.name}"
                         for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id not in {"self", "cls"}
                    and node.value.id in _imported_project_modules(path)):
                uses.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not uses, "private names used outside their module:\n" + "\n".join(uses)


def _imported_project_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] in PACKAGES}
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            names |= {a.asname or a.name for a in node.names}
    return names


@pytest.mark.parametrize("project", IMPLEMENTED)
def test_entry_modules_import_no_other_entry_module(project):
    bad = []
    for name in ENTRY_MODULES - {"reproduce"}:
        path = ROOT / project / f"{name}.py"
        if not path.is_file():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for module in modules:
                parts = module.split(".")
                if parts[0] == project and len(parts) > 1 and parts[1] in ENTRY_MODULES and parts[1] != name:
                    bad.append(f"{project}/{name}.py:{node.lineno} imports {module}")
    assert not bad, "entry modules must not import each other (move the shared code to pipeline/engine):\n" + \
        "\n".join(bad)


@pytest.mark.parametrize("project", IMPLEMENTED)
def test_project_has_the_standard_rooms(project):
    folder = ROOT / project
    need = ["__init__.py", "README.md", "settings.py", "data.py", "engine.py", "configs/default.yaml",
            "configs/ci.yaml", "train.py", "eval.py", "reproduce.py", "synth.py", "tests"]
    missing = [n for n in need if not (folder / n).exists()]
    assert not missing, f"{project}/ lacks {missing}"
    assert (folder / "model.py").is_file() or (folder / "models").is_dir(), f"{project}/ has no model.py or models/"
    assert not (folder / "experiment.py").exists(), \
        f"{project}/experiment.py: config goes to settings.py, glue to pipeline.py"
    assert "## Design notes" in (folder / "README.md").read_text(), f"{project}/README.md has no 'Design notes'"


@pytest.mark.parametrize("project", IMPLEMENTED)
def test_config_vocabulary(project):
    from common.runtime import RuntimeConfig

    settings = importlib.import_module(f"{project}.settings")
    fields = {f.name: f for f in dataclasses.fields(settings.Config)}
    missing = TOP_LEVEL - set(fields)
    assert not missing, f"{project}.settings.Config lacks the top-level keys {sorted(missing)}"
    hints = __import__("typing").get_type_hints(settings.Config)
    assert issubclass(hints["runtime"], RuntimeConfig), f"{project}: runtime must be common.runtime.RuntimeConfig"
    data_fields = {f.name for f in dataclasses.fields(hints["data"])}
    assert {"root", "synthetic", "verify"} <= data_fields, f"{project}: data needs root, synthetic and verify"


@pytest.mark.parametrize("project", PROJECTS)
def test_status_words_are_true(project):
    init = (ROOT / project / "__init__.py").read_text().lower()
    readme = (ROOT / project / "README.md").read_text().lower()
    if project in IMPLEMENTED:
        assert "planned" not in init, f"{project}/__init__.py still calls the package planned"
        assert "status: planned" not in readme, f"{project}/README.md still says 'Status: planned'"


@pytest.mark.parametrize("project", IMPLEMENTED)
def test_every_entry_module_is_under_the_import_contract(project):
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    listed = {m for c in contracts if c["type"] == "independence" for m in c["modules"] if m.startswith(project + ".")}
    entries = {f"{project}.{f.stem}" for f in (ROOT / project).glob("*.py")
               if f.stem != "reproduce" and re.search(r"^def main\(", f.read_text(), re.MULTILINE)}
    assert entries <= listed, f"add {sorted(entries - listed)} to the entry-module contract in pyproject.toml"
