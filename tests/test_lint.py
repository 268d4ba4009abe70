"""`make lint`'s two architecture checks fail on a deliberate violation (and pass without it)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _toml_value(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return f'"{value}"'


def _import_contracts_config(path: Path) -> None:
    """The repository's package-level contracts (not the per-project entry-module ones) as a config file."""
    cfg = PYPROJECT["tool"]["importlinter"]
    lines = ["[tool.importlinter]", f"root_packages = {_toml_value(cfg['root_packages'])}"]
    for contract in cfg["contracts"]:
        if any("." in m for key in ("modules", "source_modules") for m in contract.get(key, [])):
            continue
        lines += ["", "[[tool.importlinter.contracts]]"] + [f"{k} = {_toml_value(v)}" for k, v in contract.items()]
    path.write_text("\n".join(lines) + "\n")


def test_import_contracts_fail_on_a_project_importing_another(tmp_path):
    for package in PYPROJECT["tool"]["importlinter"]["root_packages"]:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "fpt_plus" / "model.py").write_text("import common\n")
    _import_contracts_config(tmp_path / "contracts.toml")

    def lint() -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "lint-imports"), "--config", "contracts.toml", "--no-cache"], cwd=tmp_path,
                              capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path), "PATH": str(BIN)})

    clean = lint()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    (tmp_path / "fpt_plus" / "model.py").write_text("import common\nfrom spmix import losses\n")
    (tmp_path / "spmix" / "losses.py").write_text("")
    broken = lint()
    assert broken.returncode != 0 and "Projects are independent of each other" in broken.stdout
    (tmp_path / "fpt_plus" / "model.py").write_text("")
    (tmp_path / "common" / "config.py").write_text("import octa_iqa\n")
    assert "common sits below every project" in lint().stdout


def test_duplicate_code_check_fails_on_a_copied_function(tmp_path):
    body = "\n".join(f"    total = total * {i} + len(items) - {i}" for i in range(12))
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
        (tmp_path / name / "work.py").write_text(f"def run_{name}(items):\n    total = 0\n{body}\n    return total\n")

    def lint() -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "pylint"), f"--rcfile={ROOT / 'pyproject.toml'}", "one", "two"],
                              cwd=tmp_path, capture_output=True, text=True)

    copied = lint()
    assert copied.returncode != 0 and "duplicate-code" in copied.stdout
    (tmp_path / "two" / "work.py").write_text("def run_two(items):\n    return sum(items)\n")
    assert lint().returncode == 0
