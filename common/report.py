"""The root README's results table: ``make report`` copies each project's newest reproduce headline into it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

__all__ = ["headline", "update_readme_results", "main"]


def headline(csv_path: Path) -> str:
    import pandas as pd

    frame = pd.read_csv(csv_path)
    metrics = [c for c in frame.columns if c != "method" and not c.endswith("_std")
               and pd.api.types.is_numeric_dtype(frame[c])]
    if frame.empty or not metrics:
        return ""
    row = frame.iloc[0]
    value = f"{metrics[0]} {row[metrics[0]]:.3f}"
    if f"{metrics[0]}_std" in frame.columns and not pd.isna(row[f"{metrics[0]}_std"]):
        value += f" ± {row[f'{metrics[0]}_std']:.3f}"
    return value


def update_readme_results(readme: str | Path, runs_root: str | Path, projects: Sequence[str]) -> dict[str, str]:
    """Fill the last column ("ours") of each project's row in the README results table.

    A project's row is the table row whose first cell links ``<project>/``; the value is the headline of the newest
    ``runs/<project>/reproduce/<run>/comparison.csv`` (by modification time; first row, first metric), with the run
    folder as text (``runs/`` is not versioned, so no link). Rows of
    projects without a reproduce run are left as they are. Returns ``{project: new cell}``.
    """
    readme = Path(readme)
    lines = readme.read_text().splitlines()
    updated: dict[str, str] = {}
    for project in projects:
        runs = sorted(Path(runs_root, project, "reproduce").glob("*/comparison.csv"), key=lambda p: p.stat().st_mtime)
        if not runs:
            continue
        newest = runs[-1]
        cell = f"{headline(newest)} (`{newest.parent.relative_to(readme.parent)}`)"
        for i, line in enumerate(lines):
            cells = line.split("|")
            if line.startswith("|") and len(cells) > 3 and f"({project}/)" in cells[1]:
                cells[-2] = f" {cell} "
                lines[i] = "|".join(cells)
                updated[project] = cell
    readme.write_text("\n".join(lines) + "\n")
    return updated


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m common.report PROJECT ...``: the ``make report`` target."""
    from common.rundir import repo_root

    parser = argparse.ArgumentParser(description="Copy every project's newest reproduce result into README.md")
    parser.add_argument("--readme", default=str(repo_root() / "README.md"))
    parser.add_argument("--runs", default=str(repo_root() / "runs"))
    parser.add_argument("projects", nargs="+")
    args = parser.parse_args(argv)
    updated = update_readme_results(args.readme, args.runs, args.projects)
    for project in args.projects:
        print(f"{project:12s} {updated.get(project, '(no reproduce run yet)')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
