"""PNG and TIFF reading on real X-ray, nuclei and EM pictures; PNG writing round trips."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from realdata import need
from medlens.data.readers import read_image, read_picture, write_png


def test_montgomery_chest_xray_is_one_channel(data_root):
    path = need(data_root, "montgomery_cxr_lung_masks/images/MCUCXR_0001_0.png")
    image = read_image(path)
    assert image.array.shape == (1, 512, 512) and image.array.dtype == np.uint8
    assert image.spacing == (1.0, 1.0)
    assert np.array_equal(image.array[0], np.asarray(Image.open(path)))


def test_dsb_rgba_drops_its_opaque_alpha(data_root):
    path = sorted(need(data_root, "nuclei_dsb2018_stage1_subset/images").glob("*.png"))[0]
    rgba = np.asarray(Image.open(path))
    assert rgba.shape[-1] == 4 and np.all(rgba[..., 3] == 255)
    image = read_picture(path)
    assert image.array.shape == (3, *rgba.shape[:2])
    assert np.array_equal(np.moveaxis(image.array, 0, -1), rgba[..., :3])


def test_real_transparency_keeps_the_alpha_channel(tmp_path, data_root):
    path = sorted(need(data_root, "nuclei_dsb2018_stage1_subset/images").glob("*.png"))[0]
    rgba = np.asarray(Image.open(path)).copy()
    rgba[:10, :10, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    assert read_picture(tmp_path / "alpha.png").array.shape == (4, *rgba.shape[:2])


def test_16_bit_label_png_keeps_its_ids(data_root):
    path = sorted(need(data_root, "nuclei_dsb2018_stage1_subset/labels").glob("*.png"))[0]
    image = read_picture(path)
    assert image.array.dtype == np.uint16 and image.array.shape[0] == 1
    assert np.array_equal(image.array[0], np.asarray(Image.open(path)))


@pytest.mark.parametrize(("relative", "shape", "dtype", "n_ids"), [
    ("nuclei_dsb2018_stardist/stardist_data_images/img2d.tif", (1, 512, 512), np.uint16, None),
    ("nuclei_dsb2018_stardist/stardist_data_images/mask2d.tif", (1, 512, 512), np.uint16, 125),
    ("nuclei_dsb2018_stardist/stardist_tests_data/img2d.tif", (1, 256, 256), np.uint8, None),
    ("nuclei_dsb2018_stardist/stardist_tests_data/mask2d.tif", (1, 256, 256), np.uint16, 65),
])
def test_stardist_tiffs(data_root, relative, shape, dtype, n_ids):
    image = read_image(need(data_root, relative))
    assert image.array.shape == shape and image.array.dtype == dtype
    if n_ids is not None:  # README: 125 and 65 nuclei
        assert len(np.unique(image.array)) - 1 == n_ids


def test_tiff_stack_is_a_volume(tmp_path, data_root):
    folder = need(data_root, "isbi2012_membrane/train/image")
    slices = np.stack([np.asarray(Image.open(folder / f"{i}.png")) for i in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", slices, photometric="minisblack")
    image = read_picture(tmp_path / "stack.tif")
    assert image.array.shape == (1, 3, 512, 512)
    assert np.array_equal(image.array[0], slices)


def test_rgb_tiff_is_channel_first(tmp_path, data_root):
    path = sorted(need(data_root, "nuclei_dsb2018_stage1_subset/images").glob("*.png"))[0]
    rgb = np.asarray(Image.open(path))[..., :3]
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    assert np.array_equal(read_picture(tmp_path / "rgb.tif").array, np.moveaxis(rgb, -1, 0))


def test_write_png_round_trips(tmp_path, data_root):
    label = read_picture(sorted(need(data_root, "nuclei_dsb2018_stage1_subset/labels").glob("*.png"))[0])
    write_png(label.array[0], tmp_path / "label.png")
    assert np.array_equal(read_picture(tmp_path / "label.png").array, label.array)
    xray = read_picture(need(data_root, "montgomery_cxr_lung_masks/masks/MCUCXR_0001_0.png"))
    lung = xray.array[0] >= 128
    write_png(lung, tmp_path / "sub" / "lung.png")
    assert np.array_equal(read_picture(tmp_path / "sub" / "lung.png").array[0], lung.astype(np.uint8) * 255)


def test_write_png_refuses_what_it_cannot_store_losslessly(tmp_path):
    with pytest.raises(ValueError, match="float32"):
        write_png(np.zeros((4, 4), np.float32), tmp_path / "f.png")
    with pytest.raises(ValueError, match="2D"):
        write_png(np.zeros((2, 4, 4), np.uint8), tmp_path / "f.png")
