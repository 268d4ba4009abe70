"""Dataset readers in the published layouts (on files written by synth.py or fabricated) and their errors."""

import numpy as np
import pytest
from PIL import Image

from common.readers import ImageReadError
from yolocurvseg.data import DatasetError, MixedSampler, PairSampler, list_cases, load_case, load_cases
from yolocurvseg.hidden_domain import write_drive_like


@pytest.fixture(scope="module")
def drive_root(tmp_path_factory):
    return write_drive_like(tmp_path_factory.mktemp("drive"), n_train=3, n_test=2, size=48, seed=0)


def test_drive_reader_on_synth_output(drive_root):
    train = list_cases("drive", drive_root, "train")
    test = list_cases("drive", drive_root, "test")
    assert [c.case_id for c in test] == ["01", "02"] and [c.case_id for c in train] == ["03", "04", "05"]
    assert all(c.skeleton is not None for c in train)
    case = load_case(train[0], "drive")
    assert case.image.shape == (48, 48) and case.image.dtype == np.float32 and case.image.min() >= 0
    assert set(np.unique(case.label).tolist()) <= {0, 1} and case.label.sum() > 0
    assert case.fov.dtype == bool and 0.5 < case.fov.mean() < 0.9
    assert case.skeleton.sum() > 0
    # the green channel carries the vessels: darker inside the mask
    assert case.image[case.label > 0].mean() < case.image[(case.label == 0) & case.fov].mean()


def test_drive_errors(drive_root, tmp_path):
    with pytest.raises(DatasetError, match="split"):
        list_cases("drive", drive_root, "val")
    with pytest.raises(DatasetError, match="unknown dataset"):
        list_cases("stare", drive_root, "train")
    with pytest.raises(DatasetError, match="not found"):
        list_cases("drive", tmp_path, "train")
    import shutil

    root = tmp_path / "d"
    shutil.copytree(drive_root, root)
    (root / "training" / "1st_manual" / "03_manual1.gif").unlink()
    with pytest.raises(DatasetError, match="03_manual1.gif"):
        list_cases("drive", root, "train")


def test_mask_values_outside_0_255_raise(drive_root, tmp_path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(drive_root, root)
    path = root / "test" / "1st_manual" / "01_manual1.gif"
    arr = np.array(Image.open(path))
    arr[arr > 0] = 128
    Image.fromarray(arr).save(path)
    case = list_cases("drive", root, "test")[0]
    with pytest.raises(ImageReadError, match="outside"):
        load_case(case, "drive")


def test_corrupt_image_raises(drive_root, tmp_path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(drive_root, root)
    (root / "test" / "images" / "01_test.tif").write_bytes(b"not a tiff")
    with pytest.raises(ImageReadError, match="01_test.tif"):
        load_case(list_cases("drive", root, "test")[0], "drive")


def _png(arr, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def test_chasedb1_dca1_octa500_corn_layouts(tmp_path):
    img = (np.random.default_rng(0).random((24, 24, 3)) * 200 + 30).astype(np.uint8)
    lab = np.zeros((24, 24), np.uint8)
    lab[10:13, :] = 255
    for child in (1, 11):
        for eye in "LR":
            Image.fromarray(img).save(tmp_path / "chase" / f"Image_{child:02d}{eye}.jpg") if (
                tmp_path / "chase").exists() else ((tmp_path / "chase").mkdir(), Image.fromarray(img).save(
                    tmp_path / "chase" / f"Image_{child:02d}{eye}.jpg"))
            _png(lab, tmp_path / "chase" / f"Image_{child:02d}{eye}_1stHO.png")
    train = list_cases("chasedb1", tmp_path / "chase", "train")
    assert [c.case_id for c in train] == ["Image_01L", "Image_01R"]
    assert load_case(train[0], "chasedb1").fov.any()
    for n in (1, 2, 101):
        _png(img[..., 0], tmp_path / "dca1" / "img" / f"{n}.png")
        _png(lab, tmp_path / "dca1" / "gt" / f"{n}.png")
    assert [c.case_id for c in list_cases("dca1", tmp_path / "dca1", "test")] == ["101"]
    assert load_case(list_cases("dca1", tmp_path / "dca1", "train")[1], "dca1").label.sum() == 72
    base = tmp_path / "octa" / "OCTA_6M"
    for i in (10001, 10201):
        _png(img[..., 0], base / "Projection Maps" / "OCTA(ILM_OPL)" / f"{i}.bmp")
        _png(lab, base / "GT_LargeVessel" / f"{i}.bmp")
    assert [c.case_id for c in list_cases("octa500", tmp_path / "octa", "test")] == ["10201"]
    _png(img[..., 0], tmp_path / "corn" / "train" / "images" / "a.png")
    _png(lab, tmp_path / "corn" / "train" / "labels" / "a.png")
    assert load_cases(list_cases("corn", tmp_path / "corn", "train"), "corn")[0].label.shape == (24, 24)


def test_h5_reader_needs_h5py_or_reads(tmp_path):
    h5py = pytest.importorskip("h5py")
    (tmp_path / "train").mkdir()
    with h5py.File(tmp_path / "train" / "c1.h5", "w") as f:
        f["image"] = np.random.rand(16, 16).astype(np.float32)
        f["label"] = np.eye(16, dtype=np.uint8)
        f["scribble"] = np.full((16, 16), 2, np.uint8)
    case = load_case(list_cases("h5", tmp_path, "train")[0], "h5")
    assert case.label.sum() == 16


def test_pair_sampler_shapes_and_padding():
    imgs = [np.random.rand(20, 20).astype(np.float32)]
    labs = [np.ones((20, 20), np.uint8)]
    x, y = PairSampler(imgs, labs, crop=32).batch(np.random.default_rng(0), 3)
    assert x.shape == (3, 1, 32, 32) and y.shape == (3, 32, 32)
    assert (y == 2).any() and (y == 1).any()  # padding is ignored
    with pytest.raises(ValueError, match="matching"):
        PairSampler(imgs, [], 8)


def test_synth_cli_writes_reuses_and_refuses_other_parameters(tmp_path):
    import json

    from common.datasets import STAMP_NAME, DatasetFolderError
    from yolocurvseg import synth

    root = synth.main(["--out", str(tmp_path / "h"), "--n-train", "2", "--n-test", "1", "--size", "32"])
    assert len(list_cases("drive", root, "train")) == 2
    assert json.loads((root / STAMP_NAME).read_text())["size"] == 32
    before = sorted(p.stat().st_mtime_ns for p in root.rglob("*.tif"))
    assert synth.main(["--out", str(tmp_path / "h"), "--n-train", "2", "--n-test", "1", "--size", "32"]) == root
    assert sorted(p.stat().st_mtime_ns for p in root.rglob("*.tif")) == before  # same parameters: reused
    with pytest.raises(DatasetFolderError, match="n_train"):  # other parameters: refused, never regenerated
        synth.main(["--out", str(tmp_path / "h"), "--n-train", "3", "--n-test", "1", "--size", "32"])
    assert len(list_cases("drive", root, "train")) == 2


def test_synth_cli_leaves_a_foreign_folder_untouched(tmp_path):
    from common.datasets import DatasetFolderError
    from yolocurvseg import synth

    real = tmp_path / "DRIVE"
    (real / "training" / "images").mkdir(parents=True)
    (real / "training" / "images" / "21_training.tif").write_bytes(b"the user's real image")
    with pytest.raises(DatasetFolderError, match="not empty"):
        synth.main(["--out", str(real), "--size", "32"])
    assert (real / "training" / "images" / "21_training.tif").read_bytes() == b"the user's real image"
    assert sorted(p.name for p in real.rglob("*")) == ["21_training.tif", "images", "training"]
    assert not real.with_name("DRIVE.partial").exists()


def test_pair_sampler_public_crop_and_mixed_batches():
    sampler = PairSampler([np.random.rand(40, 40).astype(np.float32)], [np.ones((40, 40), np.uint8)], crop=16)
    img, lab = sampler.crop_pair(sampler.images[0], sampler.labels[0], np.random.default_rng(0))
    assert img.shape == lab.shape == (16, 16)
    assert sampler.image_crops(np.random.default_rng(0), 3).shape == (3, 16, 16)
    other = PairSampler([np.random.rand(40, 40).astype(np.float32)], [np.zeros((40, 40), np.uint8)], crop=16)
    x, y = MixedSampler(sampler, other, 0.25).batch(np.random.default_rng(1), 4)
    assert x.shape == (4, 1, 16, 16) and (y[0] == 1).all() and (y[1:] == 0).all()


def test_unexpected_files_are_named(drive_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(drive_root, root)
    (root / "training" / "images" / "notes.txt").write_text("x")
    (root / "training" / "images" / "03_training_copy.tif").write_bytes(b"")
    assert len(list_cases("drive", root, "train")) == 3
    out = capsys.readouterr().out
    assert "notes.txt" in out and "03_training_copy.tif" in out


def test_training_crops_and_inference_share_the_fov_statistics():
    """Every segmenter input is standardized with the statistics of its whole image inside the FOV: a full-size
    training crop (no gamma jitter) holds exactly the values the model sees at inference, and the dark out-of-FOV
    surround does not move them."""
    import torch

    from yolocurvseg.engine import predict_image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    fov = np.hypot(yy - 15.5, xx - 15.5) < 14
    image = np.where(fov, 0.4 + 0.2 * rng.random((32, 32)), 0.02).astype(np.float32)
    sampler = PairSampler([image], [np.zeros((32, 32), np.uint8)], crop=32, gamma=0.0, fovs=[fov])
    x, _ = sampler.batch(np.random.default_rng(1), 1)
    crop = x[0, 0].numpy()

    class Identity(torch.nn.Module):  # logits (0, x): the curve probability is sigmoid(input)
        def forward(self, t):
            return torch.cat([torch.zeros_like(t), t], dim=1)

    p = predict_image(Identity(), image, 32, torch.device("cpu"), fov=fov).astype(np.float64)
    seen = np.log(p / (1 - p))
    np.testing.assert_allclose(np.sort(crop.ravel()), np.sort(seen.ravel()), atol=1e-4)  # same values (flip/rot90)
    assert abs(seen[fov].mean()) < 1e-4 and abs(seen[fov].std() - 1) < 1e-3  # FOV statistics, not whole-image
    whole = (image - image.mean()) / image.std()
    assert np.abs(whole[fov] - seen[fov]).max() > 0.5  # the surround would have shifted them
