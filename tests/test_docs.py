"""Every command the READMEs show for train.py / eval.py / reproduce.py parses with its config and overrides.

Each command runs in-process as ``main(argv + ["--print-config"])``: the config is loaded and validated, nothing is
trained or written. Placeholders (``<dataset>``, ``$DATA``) and ``make`` lines are not commands of this kind.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECTS = ["fpt_plus", "spmix", "fedlppa", "aslseg", "pamsr", "prior", "joinedtrans", "octa_iqa", "yolocurvseg"]
ENTRIES = ("train", "eval", "reproduce")
FENCE = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.DOTALL)


def _commands(readme: Path) -> list[str]:
    lines = []
    for block in FENCE.findall(readme.read_text()):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [ln.split(" #")[0].strip() for ln in joined.splitlines()
                  if ln.strip() and not ln.lstrip().startswith("#")]
    return lines


def _parse(command: str, here: str | None) -> tuple[str, str, list[str]] | None:
    """``(project, entry, argv)`` of a command that runs a project's train/eval/reproduce, else None."""
    if re.search(r"<[^>]+>|\$\{?\w", command):
        return None
    for part in command.split("&&"):
        words = shlex.split(part)
        if len(words) >= 2 and words[0] == "cd" and words[1].rstrip("/") in PROJECTS:
            here = words[1].rstrip("/")
            continue
        for i, word in enumerate(words):
            module = None
            if word == "-m" and i + 1 < len(words):
                module = words[i + 1]
                rest = words[i + 2:]
            elif word.endswith(".py"):
                module = word[:-3].replace("/", ".")
                rest = words[i + 1:]
            if module is None:
                continue
            parts = module.split(".")
            if len(parts) == 2 and parts[0] in PROJECTS and parts[1] in ENTRIES:
                return parts[0], parts[1], rest
            if len(parts) == 1 and here is not None and parts[0] in ENTRIES:
                return here, parts[0], rest
    return None


def _cases() -> list[tuple[str, str]]:
    cases = []
    for readme in [ROOT / "README.md", *(ROOT / p / "README.md" for p in PROJECTS)]:
        here = readme.parent.name if readme.parent != ROOT else None
        cases += [(str(readme.relative_to(ROOT)), c) for c in _commands(readme) if _parse(c, here)]
    return cases


@pytest.mark.parametrize(("readme", "command"), _cases())
def test_readme_command_parses(readme, command, monkeypatch):
    here = Path(readme).parent.name or None
    project, entry, argv = _parse(command, here if here in PROJECTS else None)
    # a root README command without `cd <project>` runs from the repository root (its paths say so)
    monkeypatch.chdir(ROOT if here not in PROJECTS and "cd " not in command else ROOT / project)
    module = importlib.import_module(f"{project}.{entry}")
    with pytest.raises(SystemExit) as info:
        module.main([*argv, "--print-config"])
    assert info.value.code == 0, f"{readme}: `{command}` does not parse (exit {info.value.code})"


def test_the_docs_test_finds_commands():
    assert len(_cases()) >= 10
