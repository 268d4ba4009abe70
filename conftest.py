"""Repository-wide pytest hooks.

- Tests marked ``gpu`` are skipped when CUDA is not available.
- Every test is put in the ``xdist_group`` of its top-level folder (a project, ``common`` or ``tests``), so that
  ``pytest -n 2 --dist loadgroup`` (what ``make test`` runs) keeps a project's tests on one worker: its session
  fixtures (a trained model, a generated data set) are built once, as in a serial run, and two projects run side by
  side. Without ``--dist loadgroup`` the marks have no effect.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def _folder(item: pytest.Item) -> str:
    try:
        return Path(item.path).resolve().relative_to(ROOT).parts[0]
    except ValueError:  # a test outside the repository (passed explicitly): its own group
        return str(item.path)


def pytest_collection_modifyitems(config, items):
    import torch

    for item in items:
        item.add_marker(pytest.mark.xdist_group(_folder(item)))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
