"""One test per real-data reader on files whose names, sizes, bit depths and value encodings follow the published
archives as the README documents them (DRIVE TIFF + palette GIFs, CHASEDB1 JPEG + PNG, DCA1 320 x 320 PNGs with
{0, 255} masks, OCTA500 8-bit BMPs, CORN PNG/TIF, the release's preprocessed .h5)."""

import numpy as np
import pytest
from PIL import Image

from yolocurvseg.data import list_cases, load_case

RNG = np.random.default_rng(0)


def _rgb(h, w):
    """An RGB uint8 image whose channels differ (red 180, green carries a dark stripe, blue 60)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 180, 140, 60
    img[h // 2 - 2: h // 2 + 2, :, 1] = 40
    return img


def _mask(h, w):
    m = np.zeros((h, w), np.uint8)
    m[h // 2 - 2: h // 2 + 2, :] = 255
    return m


def _palette_gif(mask):
    """A palette ('P') image: index 0 black, index 1 white (a third, unused colour keeps Pillow from reading it as
    grey), as a palette GIF of the archive would decode."""
    img = Image.fromarray((mask > 0).astype(np.uint8), mode="P")
    img.putpalette([0, 0, 0, 255, 255, 255, 255, 0, 0] + [0] * (256 * 3 - 9))
    return img


def _save(arr, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    (arr if isinstance(arr, Image.Image) else Image.fromarray(arr)).save(path, **kw)


def test_drive_tiff_and_palette_gifs(tmp_path):
    """DRIVE: ``training/images/21_training.tif`` RGB 8-bit 565 x 584, ``1st_manual/21_manual1.gif`` and
    ``mask/21_training_mask.gif`` palette GIFs holding 0 / 255."""
    h, w = 584, 565
    _save(_rgb(h, w), tmp_path / "training" / "images" / "21_training.tif")
    _save(_palette_gif(_mask(h, w)), tmp_path / "training" / "1st_manual" / "21_manual1.gif")
    fov = np.full((h, w), 255, np.uint8)
    fov[:20] = 0
    _save(_palette_gif(fov), tmp_path / "training" / "mask" / "21_training_mask.gif")
    assert Image.open(tmp_path / "training" / "1st_manual" / "21_manual1.gif").mode == "P"
    case = load_case(list_cases("drive", tmp_path, "train")[0], "drive")
    assert case.case_id == "21" and case.image.shape == (h, w)
    assert case.image[0, 0] == pytest.approx(140 / 255) and case.image[h // 2, 0] == pytest.approx(40 / 255)  # green
    assert case.label.dtype == np.uint8 and set(np.unique(case.label).tolist()) == {0, 1}
    assert case.label.sum() == 4 * w and case.fov.sum() == (h - 20) * w


def test_chasedb1_jpeg_and_png(tmp_path):
    """CHASEDB1: flat ``Image_01L.jpg`` (RGB JPEG, 999 x 960) + ``Image_01L_1stHO.png`` (8-bit, 0 / 255);
    children 01-10 train, 11-14 test; the FOV from the red channel."""
    h, w = 960, 999
    img = _rgb(h, w)
    img[:, :40] = img[:, -40:] = img[:40] = img[-40:] = 0  # outside the FOV: black, as around a fundus
    for name in ("Image_01L", "Image_01R", "Image_11L"):
        _save(img, tmp_path / f"{name}.jpg", quality=95)
        _save(_mask(h, w), tmp_path / f"{name}_1stHO.png")
    train, test = list_cases("chasedb1", tmp_path, "train"), list_cases("chasedb1", tmp_path, "test")
    assert [c.case_id for c in train] == ["Image_01L", "Image_01R"] and [c.case_id for c in test] == ["Image_11L"]
    case = load_case(train[0], "chasedb1")
    assert case.image.shape == (h, w) and set(np.unique(case.label).tolist()) == {0, 1}
    assert not case.fov[:, :30].any() and not case.fov[:30].any() and case.fov[60:-60, 60:-60].all()


def test_dca1_release_pngs(tmp_path):
    """DCA1 release: ``img/<n>.png`` 8-bit grey 320 x 320, ``gt/<n>.png`` and ``skeleton/<n>.png`` mode L, {0, 255};
    1-100 train, 101-134 test."""
    grey = (RNG.random((320, 320)) * 255).astype(np.uint8)
    skeleton = np.zeros((320, 320), np.uint8)
    skeleton[160, 10:300] = 255
    for n in (1, 100, 101):
        _save(grey, tmp_path / "img" / f"{n}.png")
        _save(_mask(320, 320), tmp_path / "gt" / f"{n}.png")
        _save(skeleton, tmp_path / "skeleton" / f"{n}.png")
    assert [c.case_id for c in list_cases("dca1", tmp_path, "train")] == ["1", "100"]
    case = load_case(list_cases("dca1", tmp_path, "test")[0], "dca1")
    assert case.case_id == "101" and case.image.dtype == np.float32
    np.testing.assert_allclose(case.image, grey / 255.0, atol=1e-6)
    assert case.skeleton.sum() == 290 and case.label.sum() == 4 * 320 and case.fov.all()


@pytest.mark.parametrize(("subset", "size", "ids"), [("OCTA_6M", 400, (10001, 10201)),
                                                    ("OCTA_3M", 304, (10301, 10451))])
def test_octa500_bmp_projection_and_label(tmp_path, subset, size, ids):
    """OCTA500: ``<subset>/Projection Maps/OCTA(ILM_OPL)/<id>.bmp`` 8-bit grey BMP (400 x 400 for 6M, 304 x 304 for
    3M) and ``<subset>/GT_LargeVessel/<id>.bmp`` 8-bit {0, 255}; IPN-V2 split by id."""
    base = tmp_path / subset
    for i in ids:
        projection = (RNG.random((size, size)) * 255).astype(np.uint8)
        _save(projection, base / "Projection Maps" / "OCTA(ILM_OPL)" / f"{i}.bmp")
        _save(_mask(size, size), base / "GT_LargeVessel" / f"{i}.bmp")
    assert Image.open(base / "GT_LargeVessel" / f"{ids[0]}.bmp").format == "BMP"
    train = list_cases("octa500", tmp_path, "train", subset=subset)
    test = list_cases("octa500", tmp_path, "test", subset=subset)
    assert [c.case_id for c in train] == [str(ids[0])] and [c.case_id for c in test] == [str(ids[1])]
    case = load_case(test[0], "octa500")
    assert case.image.shape == (size, size) and case.label.sum() == 4 * size


def test_corn_images_and_labels(tmp_path):
    """CORN (our reading of the release): ``<split>/images/<name>.png|tif`` 8-bit grey 384 x 384 and
    ``<split>/labels/<name>.png`` {0, 255}."""
    grey = (RNG.random((384, 384)) * 255).astype(np.uint8)
    _save(grey, tmp_path / "train" / "images" / "001.tif")
    _save(grey, tmp_path / "train" / "images" / "002.png")
    for name in ("001", "002"):
        _save(_mask(384, 384), tmp_path / "train" / "labels" / f"{name}.png")
    cases = list_cases("corn", tmp_path, "train")
    assert [c.case_id for c in cases] == ["001", "002"]
    for c in cases:
        loaded = load_case(c, "corn")
        np.testing.assert_allclose(loaded.image, grey / 255.0, atol=1e-6)
        assert loaded.label.sum() == 4 * 384


def test_release_h5_keys_and_encodings(tmp_path):
    """Release ``.h5``: ``image`` float in [0, 1], ``label`` small integers (saved x127 for viewing), ``scribble``
    0 bg / 1 fg / 2 unlabelled."""
    h5py = pytest.importorskip("h5py")
    image = RNG.random((320, 320)).astype(np.float32)
    label = (_mask(320, 320) > 0).astype(np.uint8)
    scribble = np.full((320, 320), 2, np.uint8)
    scribble[160, 10:300], scribble[20, 10:300] = 1, 0
    (tmp_path / "test").mkdir()
    with h5py.File(tmp_path / "test" / "case7.h5", "w") as f:
        f["image"], f["label"], f["scribble"] = image, label, scribble
    case = load_case(list_cases("h5", tmp_path, "test")[0], "h5")
    assert case.case_id == "case7"
    np.testing.assert_array_equal(case.image, image)
    assert case.label.sum() == 4 * 320 and case.skeleton.sum() == 290 and case.fov.all()
