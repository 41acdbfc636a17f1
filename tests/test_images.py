"""Safe image reading: every bad file gets a one-line error naming it; odd-but-usable files convert with a note."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jaxdeid.data.images import (HIDDEN_REASON, MIN_SIDE, ImageError, check_header, list_files, read_image,
                                 scan_folder, write_image)


def _rgb(h=40, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png16_rgb(path, array):
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _error(path, **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return info.value.reason


def test_plain_rgb_roundtrip(tmp_path):
    pixels = _rgb()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image, notes = read_image(tmp_path / "a.png")
    assert image.dtype == np.float32 and image.shape == (40, 48, 3) and notes == []
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-6)


def test_jpeg_reads(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "a.jpg", quality=95)
    image, _ = read_image(tmp_path / "a.jpg")
    assert image.shape == (40, 48, 3) and 0.0 <= image.min() and image.max() <= 1.0


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)))
    assert "not an image" in _error(path) or "corrupt" in _error(path)


def test_truncated_jpeg(tmp_path):
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _error(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert "empty" in _error(path)


def test_text_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n" * 20)
    assert "not an image" in _error(path)


def test_grayscale_is_converted_with_note(tmp_path):
    gray = _rgb()[..., 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    image, notes = read_image(tmp_path / "g.png")
    assert image.shape == (40, 48, 3)
    np.testing.assert_allclose(image[..., 1], gray / 255.0, atol=1e-6)
    assert any("grayscale" in n for n in notes)


def test_rgba_composited_over_black(tmp_path):
    rgba = _rgb(seed=1).copy()
    alpha = np.linspace(0, 255, 48).round().astype(np.uint8)[None, :].repeat(40, 0)
    Image.fromarray(np.dstack([rgba, alpha]), mode="RGBA").save(tmp_path / "a.png")
    image, notes = read_image(tmp_path / "a.png")
    expected = rgba / 255.0 * (alpha / 255.0)[..., None]
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert any("alpha" in n for n in notes)


def test_16bit_gray_png_keeps_precision(tmp_path):
    values = (np.arange(40 * 48).reshape(40, 48) * 31 + 7).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    image, notes = read_image(tmp_path / "g16.png")
    np.testing.assert_allclose(image[..., 0], values / 65535.0, atol=1e-7)  # not clipped at 255
    assert image.max() > 0.5 and any("16-bit" in n for n in notes)


def test_16bit_rgb_png_scaled_not_clipped(tmp_path):
    values = np.random.default_rng(2).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    _png16_rgb(tmp_path / "c16.png", values)
    image, notes = read_image(tmp_path / "c16.png")
    np.testing.assert_allclose(image, values / 65535.0, atol=1.0 / 255.0 + 1e-6)
    assert any("16-bit" in n for n in notes)


def test_16bit_rgb_tiff_full_precision(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    values = np.random.default_rng(3).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c16.tif", values)
    image, notes = read_image(tmp_path / "c16.tif")
    np.testing.assert_allclose(image, values / 65535.0, atol=1e-7)
    assert any("16-bit" in n for n in notes)


def test_float_tiff_with_nan(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    values = np.random.default_rng(4).random((20, 30, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "ok.tif", values)
    image, _ = read_image(tmp_path / "ok.tif")
    np.testing.assert_allclose(image, values, atol=1e-7)
    values[3, 4, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", values)
    assert "NaN" in _error(tmp_path / "nan.tif")


def test_npy_nan_inf_and_range(tmp_path):
    good = np.random.default_rng(5).random((20, 20, 3)).astype(np.float32)
    np.save(tmp_path / "good.npy", good)
    np.testing.assert_allclose(read_image(tmp_path / "good.npy")[0], good)
    bad = good.copy()
    bad[0, 0, 0] = np.inf
    np.save(tmp_path / "inf.npy", bad)
    assert "NaN or infinite" in _error(tmp_path / "inf.npy")
    np.save(tmp_path / "range.npy", good * 300)
    assert "expected [0, 1]" in _error(tmp_path / "range.npy")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    assert "not a readable" in _error(tmp_path / "junk.npy")


def test_huge_declared_size_rejected_before_decoding(tmp_path):
    # A valid PNG header declaring 100000 x 100000 pixels with (almost) no data: a bomb.
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))
    assert "absurd size" in _error(path)
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "big.png")
    assert "max_pixels" in _error(tmp_path / "big.png", max_pixels=1000)


def test_tiny_image_rejected(tmp_path):
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "pixel.png")
    assert "too small" in _error(tmp_path / "pixel.png")
    Image.fromarray(np.zeros((MIN_SIDE, MIN_SIDE, 3), np.uint8)).save(tmp_path / "ok.png")
    read_image(tmp_path / "ok.png")


def test_folder_is_not_an_image(tmp_path):
    assert "folder" in _error(tmp_path)


def test_scan_folder_goes_on_after_bad_files(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "good1.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(_rgb(seed=3)).save(tmp_path / "sub" / "good2.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "readme.txt").write_text("hello")
    good, bad = scan_folder(tmp_path)
    assert [p.name for p in good] == ["good1.png", "good2.jpg"]
    reasons = {p.name: r for p, r in bad}
    assert set(reasons) == {"empty.png", "readme.txt"} and "empty" in reasons["empty.png"]


def test_float_rgb_tiff_header_matches_reader(tmp_path):
    """The fast header check (what `deidentify` scans with) accepts what `read_image` reads:
    Pillow cannot open a float32 RGB TIFF, tifffile can."""
    tifffile = pytest.importorskip("tifffile")
    values = np.random.default_rng(7).random((20, 24, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "float.tif", values)
    assert read_image(tmp_path / "float.tif")[0].shape == (20, 24, 3)
    assert check_header(tmp_path / "float.tif") == (20, 24)
    assert scan_folder(tmp_path, deep=False) == ([tmp_path / "float.tif"], [])
    tifffile.imwrite(tmp_path / "huge.tif", values)
    with pytest.raises(ImageError, match="absurd size"):
        check_header(tmp_path / "huge.tif", max_pixels=100)
    (tmp_path / "fake.tif").write_text("not a tiff")
    with pytest.raises(ImageError, match="not an image file"):
        check_header(tmp_path / "fake.tif")


def test_hidden_image_files_are_reported_not_skipped(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "visible.png")
    Image.fromarray(_rgb()).save(tmp_path / ".hidden.png")
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")   # system metadata: ignored
    good, bad = scan_folder(tmp_path)
    assert good == [tmp_path / "visible.png"]
    assert bad == [(tmp_path / ".hidden.png", HIDDEN_REASON)]


def test_list_files_excludes_the_output_folder(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    (tmp_path / "out").mkdir()
    Image.fromarray(_rgb()).save(tmp_path / "out" / "a.png")
    assert list_files(tmp_path) == ([tmp_path / "a.png", tmp_path / "out" / "a.png"], [])
    assert list_files(tmp_path, exclude=tmp_path / "out") == ([tmp_path / "a.png"], [])
    assert list_files(tmp_path / "a.png") == ([tmp_path / "a.png"], [])


def test_scan_empty_folder(tmp_path):
    assert scan_folder(tmp_path) == ([], [])
    with pytest.raises(FileNotFoundError):
        scan_folder(tmp_path / "missing")


def test_write_image_atomic_png(tmp_path):
    image = np.random.default_rng(6).random((20, 24, 3)).astype(np.float32)
    path = write_image(tmp_path / "out" / "x.png", image)
    back, notes = read_image(path)
    np.testing.assert_allclose(back, np.round(image * 255) / 255, atol=1e-6)
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.png"]  # no temp file left behind
    with pytest.raises(ValueError):
        write_image(tmp_path / "nan.png", np.full((20, 20, 3), np.nan, np.float32))
    assert not (tmp_path / "nan.png").exists()


def test_data_check_command_exit_codes(tmp_path, capsys):
    from jaxdeid.cli import main

    good = tmp_path / "good"
    good.mkdir()
    Image.fromarray(_rgb()).save(good / "a.png")
    Image.fromarray(_rgb()[..., 0], mode="L").save(good / "gray.png")
    assert main(["data", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "ok   " in out and "grayscale" in out

    (good / "broken.jpg").write_text("not a picture")
    assert main(["data", "check", str(good)]) == 3
    assert f"BAD  {good / 'broken.jpg'}: " in capsys.readouterr().out

    Image.fromarray(_rgb()).save(good / ".hidden.jpg")   # one walker: reported like scan_folder does
    assert main(["data", "check", str(good)]) == 3
    assert f"BAD  {good / '.hidden.jpg'}: {HIDDEN_REASON}" in capsys.readouterr().out

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "check", str(empty)]) == 1
    (empty / "e.png").write_bytes(b"")
    assert main(["data", "check", str(empty)]) == 1
    assert main(["data", "check", str(tmp_path / "missing")]) == 1
    assert "no such folder" in capsys.readouterr().err
