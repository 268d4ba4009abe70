import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from common.rundir import create_run_dir, latest_run, repo_root, resolve_path


def test_paths_resolve_to_repo_root_from_any_cwd(tmp_path, monkeypatch):
    root = repo_root()
    assert (root / "pyproject.toml").is_file() and (root / "common").is_dir()
    monkeypatch.chdir(tmp_path)
    assert resolve_path("runs") == root / "runs"
    assert resolve_path(tmp_path / "x") == tmp_path / "x"


@dataclass
class Tiny:
    lr: float = 0.1


def test_create_run_dir_layout(tmp_path):
    run = create_run_dir("proj", "exp", Tiny(), root=tmp_path, device="cpu", timestamp="t1")
    assert run.path == tmp_path / "proj" / "exp" / "t1"
    for sub in ("checkpoints", "eval", "figures", "tb"):
        assert (run.path / sub).is_dir()
    assert yaml.safe_load((run.path / "config.yaml").read_text()) == {"lr": 0.1}
    env = json.loads((run.path / "env.json").read_text())
    assert env["device"] == "cpu" and "torch" in env["packages"] and "git_sha" in env
    create_run_dir("proj", "exp", Tiny(), root=tmp_path, timestamp="t2")
    (tmp_path / "proj" / "exp" / "t1" / "eval" / "summary.csv").write_text("x")
    assert latest_run("proj", "exp", root=tmp_path).name == "t2"
    assert latest_run("proj", "exp", root=tmp_path, require="eval/summary.csv").name == "t1"


def test_project_modules_import_from_inside_a_project_folder():
    """`cd <project> && python train.py` puts the project folder first on sys.path; package imports must work."""
    for project in ("fpt_plus", "yolocurvseg"):
        proc = subprocess.run([sys.executable, "-c", "import common.config, spmix; import " + project +
                               "; from common.rundir import repo_root; print(repo_root())"],
                              cwd=Path(repo_root(), project), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert Path(proc.stdout.strip()) == repo_root()


def test_open_run_fresh_then_resume_auto_reuses_the_folder(tmp_path, capsys):
    from dataclasses import dataclass
    from pathlib import Path

    import torch

    from common.checkpoint import save_checkpoint
    from common.rundir import open_run

    @dataclass
    class Cfg:
        experiment: str = "exp"
        runs_root: Path = tmp_path / "runs"

    first = open_run("proj", Cfg(), resume="auto")
    assert first.resume_from is None and "no last.pt" in capsys.readouterr().out
    save_checkpoint(first.run.checkpoints / "last.pt", model=torch.nn.Linear(1, 1), config={}, epoch=1, step=1)
    again = open_run("proj", Cfg(), resume="auto")
    assert again.run.path == first.run.path and again.resume_from == first.run.checkpoints / "last.pt"
    assert "resuming" in capsys.readouterr().out


def test_a_read_only_runs_root_fails_at_startup_naming_the_key(tmp_path):
    import os

    import pytest

    from common.rundir import RunFolderError, check_writable

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root ignores permission bits: use a path under a file instead
            target = tmp_path / "file"
            target.write_text("")
            with pytest.raises(RunFolderError, match="runs_root="):
                check_writable(target / "runs")
        else:
            with pytest.raises(RunFolderError, match="runs_root="):
                check_writable(folder / "runs")
    finally:
        folder.chmod(0o700)
