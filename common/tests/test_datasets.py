import json
import multiprocessing
import time

import numpy as np
import pytest
from PIL import Image

from common.datasets import (
    STAMP_NAME,
    DatasetFolderError,
    DataVerificationError,
    ensure_dataset,
    partition_by_suffix,
    split_path,
    verify_files,
)


def _writer(calls):
    def generate(folder):
        calls.append(folder)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "a.png")
    return generate


def test_ensure_dataset_generates_once_then_reuses(tmp_path):
    calls = []
    root = tmp_path / "synth"
    assert ensure_dataset(root, {"n": 1}, _writer(calls)) == root
    assert (root / "a.png").is_file() and json.loads((root / STAMP_NAME).read_text()) == {"n": 1}
    assert calls == [tmp_path / "synth.partial"] and not (tmp_path / "synth.partial").exists()
    ensure_dataset(root, {"n": 1}, _writer(calls))
    assert len(calls) == 1  # reused, not regenerated


def test_ensure_dataset_refuses_foreign_folder_and_leaves_it_untouched(tmp_path):
    real = tmp_path / "isic"
    real.mkdir()
    (real / "ISIC_0024306.jpg").write_bytes(b"real image bytes")
    with pytest.raises(DatasetFolderError, match="not created by this generator"):
        ensure_dataset(real, {"n": 1}, _writer([]))
    assert (real / "ISIC_0024306.jpg").read_bytes() == b"real image bytes"
    assert sorted(p.name for p in real.iterdir()) == ["ISIC_0024306.jpg"]


def test_ensure_dataset_refuses_other_parameters_without_deleting(tmp_path):
    root = tmp_path / "synth"
    ensure_dataset(root, {"n": 1, "seed": 0}, _writer([]))
    with pytest.raises(DatasetFolderError, match="differing: n"):
        ensure_dataset(root, {"n": 2, "seed": 0}, _writer([]))
    assert (root / "a.png").is_file()


def test_a_killed_generation_leaves_no_complete_looking_set(tmp_path):
    root = tmp_path / "synth"

    def dies(folder):
        (folder / "half.png").write_bytes(b"")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ensure_dataset(root, {"n": 1}, dies)
    assert not root.exists() and (tmp_path / "synth.partial").exists()
    ensure_dataset(root, {"n": 1}, _writer([]))  # our own leftover is replaced
    assert sorted(p.name for p in root.iterdir()) == [STAMP_NAME, "a.png"]


def test_a_foreign_partial_folder_is_refused(tmp_path):
    (tmp_path / "synth.partial").mkdir()
    (tmp_path / "synth.partial" / "keep.txt").write_text("x")
    with pytest.raises(DatasetFolderError, match="was not created"):
        ensure_dataset(tmp_path / "synth", {"n": 1}, _writer([]))
    assert (tmp_path / "synth.partial" / "keep.txt").read_text() == "x"


def test_verify_files_names_every_missing_or_truncated_file(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:20])
    with pytest.raises(DataVerificationError) as info:
        verify_files([good, bad, tmp_path / "gone.png"], "header")
    message = str(info.value)
    assert "2 of 3" in message and "bad.png" in message and "gone.png: missing" in message
    assert "good.png" not in message
    assert verify_files([good], "full") == 1
    assert verify_files([bad], "off") == 0


def test_verify_full_catches_a_truncated_body_that_the_header_check_passes(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    with pytest.raises(DataVerificationError):
        verify_files([path], "full")


def test_split_path_is_outside_the_data_root_and_keyed_by_it(tmp_path):
    a = split_path("spmix", tmp_path / "a")
    b = split_path("spmix", tmp_path / "b")
    assert a != b and "data/splits/spmix" in str(a) and tmp_path not in a.parents
    assert split_path("spmix", tmp_path / "a", override=tmp_path / "s.csv") == tmp_path / "s.csv"


def test_partition_by_suffix_names_what_it_ignores(tmp_path, capsys):
    kept, ignored = partition_by_suffix([tmp_path / "a.png", tmp_path / "b.txt", tmp_path / "c.nii.gz"],
                                        [".png", ".nii.gz"], where="images/")
    assert [p.name for p in kept] == ["a.png", "c.nii.gz"] and [p.name for p in ignored] == ["b.txt"]
    assert "ignored 1 file(s)" in capsys.readouterr().out


def _slow_generation(root: str, log: str) -> None:
    def generate(folder):
        with open(log, "a") as fh:
            fh.write("generated\n")
        time.sleep(1.0)  # long enough for the other process to arrive while this one writes
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "a.png")
    ensure_dataset(root, {"n": 1}, generate)


def test_processes_asking_at_once_generate_the_set_once(tmp_path):
    root, log = tmp_path / "synth", tmp_path / "log.txt"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_slow_generation, args=(str(root), str(log))) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
    assert [proc.exitcode for proc in procs] == [0, 0, 0]
    assert log.read_text().splitlines() == ["generated"]
    assert (root / "a.png").is_file() and (root / STAMP_NAME).is_file()
    assert not (tmp_path / "synth.partial").exists()
