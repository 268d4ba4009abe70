import gzip

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from common.readers import ImageReadError, list_images, read_image, read_mask, read_nifti


def test_png_jpeg_tiff_round_trip(tmp_path):
    rgb = (np.random.default_rng(0).random((8, 9, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    assert read_image(tmp_path / "a.png", mode="L").shape == (8, 9)
    Image.fromarray(rgb).save(tmp_path / "a.jpg")
    assert read_image(tmp_path / "a.jpg", mode="RGB").shape == (8, 9, 3)
    deep = (np.arange(72).reshape(8, 9) * 900).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "d.tif"), deep)


def test_gif_palette_mask_and_label_checks(tmp_path):
    mask = np.zeros((6, 6), np.uint8)
    mask[2:4, 2:4] = 255
    Image.fromarray(mask).convert("P").save(tmp_path / "m.gif")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.gif", binary=True), (mask > 0).astype(np.uint8))
    Image.fromarray(mask).save(tmp_path / "m.png")
    with pytest.raises(ImageReadError, match=r"m\.png holds label\(s\) \[255\]"):
        read_mask(tmp_path / "m.png", num_labels=3)
    colour = np.zeros((6, 6, 3), np.uint8)
    colour[0, 0] = [255, 0, 0]
    Image.fromarray(colour).save(tmp_path / "c.png")
    with pytest.raises(ImageReadError, match="colour image"):
        read_mask(tmp_path / "c.png")


def test_missing_truncated_and_wrong_mode_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match=r"image not found: .*nope\.png"):
        read_image(tmp_path / "nope.png")
    img = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png.*corrupt or truncated"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageReadError, match=r"text\.png"):
        read_image(tmp_path / "text.png")
    with pytest.raises(ImageReadError, match="expected one of"):
        read_image(tmp_path / "full.png", allowed_modes=["L"])


def test_nifti_round_trip_and_truncation(tmp_path):
    vol = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    nib.save(nib.Nifti1Image(vol, affine), str(tmp_path / "v.nii.gz"))
    out = read_nifti(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(out.array, vol)
    assert out.spacing == pytest.approx((0.7, 0.7, 2.5))
    raw = gzip.decompress((tmp_path / "v.nii.gz").read_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw[:-20]))
    with pytest.raises(ImageReadError, match=r"cut\.nii\.gz"):
        read_nifti(tmp_path / "cut.nii.gz")
    with pytest.raises(ImageReadError, match="volume not found"):
        read_nifti(tmp_path / "none.nii.gz")


def test_list_images_expands_folders_and_names_missing_inputs(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.png", "a/b/y.JPG", "a/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images([tmp_path / "a"])] == ["y.JPG", "x.png"]
    assert [p.name for p in list_images([tmp_path / "a"], recursive=False)] == ["x.png"]
    with pytest.raises(FileNotFoundError, match="--predict .*nope: no such file or folder"):
        list_images([tmp_path / "nope"])
    with pytest.raises(FileNotFoundError, match="no images"):
        list_images([tmp_path / "a" / "b"], suffixes=(".tif",))
