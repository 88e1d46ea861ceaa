"""OpenCV decoding (BGR to RGB), resizing and the in-memory cache."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import HAM, SHIPPED

from toolkit.base.errors import ToolkitError
from toolkit.data.images import decode_image, load_images, resize_image

HAM_IMAGE = HAM / "images" / "ISIC_0024306.jpg"  # 200x150, as every HAM10000 image


def test_decode_returns_rgb_not_opencv_bgr(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red
    cv2.imwrite(str(tmp_path / "red.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert np.array_equal(decode_image(tmp_path / "red.png"), rgb)


def test_real_ham_image_decodes_at_its_size():
    image = decode_image(HAM_IMAGE)
    assert image.shape == (150, 200, 3) and image.dtype == np.uint8


def test_squash_and_pad():
    image = decode_image(HAM_IMAGE)
    assert resize_image(image, 96, "squash").shape == (96, 96, 3)
    padded = resize_image(image, 224, "pad")
    assert padded.shape == (224, 224, 3)
    assert padded[:28].max() == 0 and padded[-28:].max() == 0  # 200x150 -> 224x168, 28 black rows each side
    assert padded[28:196].mean() > 50
    with pytest.raises(ToolkitError, match=r"^unknown resize mode 'crop'; expected one of squash, pad$"):
        resize_image(image, 96, "crop")


def test_load_images_caches_a_split_as_uint8(ham_subset):
    paths = sorted(str(p) for p in (ham_subset / "images").iterdir())
    loaded = load_images(paths, 64, "pad")
    assert loaded.images.shape == (len(paths), 64, 64, 3) and loaded.images.dtype == np.uint8
    assert np.array_equal(loaded.images[3], resize_image(decode_image(paths[3]), 64, "pad"))


def test_load_images_skips_bad_files_only_when_asked(ham_subset):
    paths = sorted(str(p) for p in (ham_subset / "images").iterdir())
    paths.insert(2, str(ham_subset / "gone.jpg"))
    with pytest.raises(ToolkitError, match=r"gone\.jpg"):
        load_images(paths, 32)
    loaded = load_images(paths, 32, skip_bad=True)
    assert len(loaded.images) == len(paths) - 1 and 2 not in loaded.kept
    assert loaded.skipped == [(paths[2], f"image file not found: {paths[2]}")]


def _bytes(path, data):
    path.write_bytes(data)
    return path


def _truncate(path):
    return _bytes(path, (HAM_IMAGE).read_bytes()[:3000])


def _write(path, pixels):
    cv2.imwrite(str(path), pixels)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda folder: folder / "gone.jpg", "image file not found: {}"),
        (lambda folder: folder, "cannot read image {}: Is a directory"),
        (lambda folder: _truncate(folder / "cut.jpg"), "truncated JPEG (no end-of-image marker): {}"),
        (
            lambda folder: _bytes(folder / "text.jpg", b"not a picture"),
            "unreadable image (not a JPEG/PNG OpenCV can decode): {}",
        ),
        (
            lambda folder: _write(folder / "rgba.png", np.full((9, 7, 4), 99, np.uint8)),
            "image with transparency (alpha below 255), expected an opaque photo: {}",
        ),
        (
            lambda folder: _write(folder / "float.tiff", np.full((9, 7, 3), 0.5, np.float32)),
            "float32 image, expected 8 or 16 bits per channel: {}",
        ),
    ],
    ids=["missing", "directory", "truncated", "unreadable", "transparent", "float"],
)
def test_decode_refuses_each_fault_by_name_and_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ToolkitError) as error:
        decode_image(path)
    assert str(error.value) == message.format(path)


def test_a_complete_jpeg_padded_with_zero_bytes_still_decodes(tmp_path):
    """Some cameras and uploaders pad a JPEG after its end-of-image marker; only a missing marker is truncation."""
    original = HAM_IMAGE
    padded = _bytes(tmp_path / "padded.jpg", original.read_bytes() + b"\x00" * 64)
    assert np.array_equal(decode_image(padded), decode_image(original))


def test_npz_addresses_read_colour_and_expand_grayscale(tmp_path):
    colour, grey = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3), np.full((3, 4, 5), 7, np.uint8)
    np.savez(tmp_path / "set.npz", val_images=colour, test_images=grey)
    assert np.array_equal(decode_image(f"{tmp_path / 'set.npz'}#val/1"), colour[1])
    expanded = decode_image(f"{tmp_path / 'set.npz'}#test/2")
    assert expanded.shape == (4, 5, 3) and (expanded == 7).all()


@pytest.mark.parametrize("size", [64, 176, 224])
@pytest.mark.parametrize("mode", ["squash", "pad"])
def test_resizing_follows_the_contract_as_the_app_computes_it(size, mode):
    """The same bytes as the app's steps in Python (``app_steps``, written from ``resize.js``, not from the toolkit):
    at 176 the 200 columns shrink by area while the 150 rows grow linearly."""
    from app_steps import app_resize

    image = decode_image(HAM_IMAGE)
    assert np.array_equal(resize_image(image, size, mode), app_resize(image, size, mode))


def test_pad_centres_a_portrait_image_with_the_odd_pixel_on_the_right():
    image = np.full((150, 101, 3), 255, np.uint8)  # portrait: 64 rows, 101 * 64/150 = 43.1 -> 43 columns
    padded = resize_image(image, 64, "pad")
    columns = np.flatnonzero(padded.max(axis=(0, 2)))
    assert padded.shape == (64, 64, 3) and padded[:, columns].min() == 255
    assert (columns[0], 63 - columns[-1]) == (10, 11)  # 21 black columns: 10 left, 11 right


def test_load_images_only_checks_when_given_no_size(ham_subset):
    paths = sorted(str(p) for p in (ham_subset / "images").iterdir())[:5]
    paths.append(str(_bytes(ham_subset / "text.jpg", b"not a picture")))
    loaded = load_images(paths, None, skip_bad=True, workers=1)
    assert loaded.images.shape == (5, 0, 0, 3) and loaded.kept.tolist() == [0, 1, 2, 3, 4]
    assert [path for path, _ in loaded.skipped] == [paths[5]]


def test_a_file_name_with_a_hash_is_an_image_not_an_npz_address(tmp_path):
    named = tmp_path / "lesion#2.jpg"
    named.write_bytes((HAM_IMAGE).read_bytes())
    assert decode_image(named).shape == (150, 200, 3)


def test_loading_nothing_good_gives_an_empty_uint8_batch_of_the_asked_size(tmp_path):
    loaded = load_images([str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")], 32, skip_bad=True)
    assert loaded.images.shape == (0, 32, 32, 3) and loaded.images.dtype == np.uint8
    assert loaded.kept.dtype == np.int64 and len(loaded.skipped) == 2  # an index array, even when empty


def save_with_orientation(pixels: np.ndarray, path, orientation: int, **options) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif, **options)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_and_opencv_apply_it(tmp_path, orientation):
    """Every orientation, checked against two libraries: Pillow on a lossless PNG, OpenCV's own reading on a JPEG."""
    from PIL import Image, ImageOps

    pixels = np.random.default_rng(orientation).integers(0, 256, (5, 8, 3), dtype=np.uint8)  # no symmetry
    save_with_orientation(pixels, tmp_path / "p.png", orientation)
    with Image.open(tmp_path / "p.png") as image:
        assert np.array_equal(decode_image(tmp_path / "p.png"), np.asarray(ImageOps.exif_transpose(image)))
    save_with_orientation(decode_image(HAM_IMAGE), tmp_path / "p.jpg", orientation, quality=95)
    upright = cv2.cvtColor(cv2.imread(str(tmp_path / "p.jpg"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(decode_image(tmp_path / "p.jpg"), upright)
    assert upright.shape == ((150, 200, 3) if orientation < 5 else (200, 150, 3))


def test_a_photo_stored_on_its_side_gets_the_answer_of_the_upright_photo(tmp_path):
    """Orientation 6 once turned a "mel 0.996" into "akiec 0.992"; the shipped bundle must see one photo."""
    from toolkit.export.bundle import Bundle

    pixels = decode_image(HAM_IMAGE)
    save_with_orientation(pixels, tmp_path / "upright.jpg", 1, quality=95)
    save_with_orientation(np.ascontiguousarray(np.rot90(pixels, 1)), tmp_path / "side.jpg", 6, quality=95)
    bundle = Bundle.open(SHIPPED)
    inputs = np.stack([bundle.preprocess(tmp_path / name) for name in ("upright.jpg", "side.jpg")])
    assert np.abs(inputs[0].astype(int) - inputs[1]).mean() < 2  # JPEG noise only (19 levels apart, turned)
    probs = bundle.predict(inputs)
    assert probs[0].argmax() == probs[1].argmax() and np.abs(probs[0] - probs[1]).max() < 0.01


def test_a_palette_image_is_expanded_to_its_rgb_colours(tmp_path):
    """The manifest's decode rule, as a Flutter or browser decoder would read the same file."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    palette = Image.fromarray(pixels).quantize(16)
    palette.save(tmp_path / "p.png")
    assert palette.mode == "P" and np.array_equal(decode_image(tmp_path / "p.png"), np.asarray(palette.convert("RGB")))
    palette.save(tmp_path / "t.png", transparency=0)
    with pytest.raises(ToolkitError, match="image with transparency"):
        decode_image(tmp_path / "t.png")


def test_grayscale_16_bit_and_opaque_alpha_become_rgb_as_a_browser_decodes_them(tmp_path):
    """Measured in Chromium: gray repeated, 16-bit to its high byte, an opaque alpha dropped (the browser test
    checks the same files end to end)."""
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    deep = rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    opaque = np.concatenate([rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), np.full((5, 7, 1), 255, np.uint8)], 2)
    assert np.array_equal(decode_image(_write(tmp_path / "g.png", gray)), np.stack([gray] * 3, axis=2))
    high = cv2.cvtColor((deep >> 8).astype(np.uint8), cv2.COLOR_BGR2RGB)
    assert np.array_equal(decode_image(_write(tmp_path / "d.png", deep)), high)
    assert np.array_equal(decode_image(_write(tmp_path / "o.png", opaque)), cv2.cvtColor(opaque, cv2.COLOR_BGRA2RGB))
