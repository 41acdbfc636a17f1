"""Safe image reading and writing: every bad file becomes one clear, one-line error.

A de-identification tool must not crash half-way through a folder of faces, nor
silently skip a face it could have protected. So reading follows two rules:

* **Refuse** what has no usable picture in it, with an `ImageError` naming the file
  and the reason: empty files, files that are not images (e.g. text named ``.jpg``),
  corrupt or truncated data, absurd sizes (more than ``max_pixels`` pixels, which
  also stops decompression bombs *before* decoding, or a side below
  ``MIN_SIDE``), and NaN / infinite / out-of-range values in float images.
* **Convert, with a note**, anything that still shows a face: grayscale
  (replicated to three channels — a privacy tool should still process a grey
  face), RGBA / LA / transparent palettes (composited over black, see below),
  16-bit images (scaled by 1/65535, never clipped to 8 bits; 16-bit *RGB* PNGs,
  which Pillow can only decode to their high byte, keep the full range at 8-bit
  precision, and say so), CMYK and palette
  images, EXIF-rotated photos, multi-frame files (first frame). The notes list
  each conversion so a reviewer can see what happened to each file.

Alpha is composited over **black** (colour × alpha) rather than dropped: the
colour of fully transparent pixels is undefined (often garbage from an editor),
so dropping alpha can show arbitrary content; black is also the colour the
loaders use for letterbox padding, and a dark surround is natural for low-light
scenes.

Everything returned is float32 HxWx3 RGB in [0, 1] (the project convention);
uint8 exists only on disk.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..progress import progress

try:   # optional: tifffile keeps 16-bit and float RGB TIFFs exact; without it Pillow reads what it can
    import tifffile
except ImportError:
    tifffile = None

# The smallest side we accept. A face needs a few pixels per feature; below 16 px
# (e.g. 1x1 tracking pixels, icons) there is nothing to recognise or protect.
MIN_SIDE = 16

# Default upper bound on width*height (64 megapixels; `config.data.max_image_pixels`).
DEFAULT_MAX_PIXELS = 64_000_000

# Extensions that `scan_folder` treats as image candidates. Anything else inside a
# data folder is reported as skipped (not silently ignored).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pnm", ".npy"})

# Pillow's own bomb check fires at its global limit; we check the declared size
# ourselves against `max_pixels` before decoding, so lift Pillow's limit only as far
# as ours and turn its warning into silence (our check reports instead).
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class ImageError(Exception):
    """A file that cannot be used as an image; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _check_size(path, height: int, width: int, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise ImageError(path, f"absurd size {width}x{height} = {height * width:,} pixels "
                               f"(more than max_pixels={max_pixels:,}; possible decompression bomb)")
    if min(height, width) < MIN_SIDE:
        raise ImageError(path, f"image too small: {width}x{height} (each side must be at least {MIN_SIDE} px)")


def _float_to_unit(path, array: np.ndarray, notes: list[str]) -> np.ndarray:
    """Float arrays must already be in [0, 1] and finite; nothing else has a defined meaning."""
    array = array.astype(np.float32)
    bad = ~np.isfinite(array)
    if bad.any():
        raise ImageError(path, f"{int(bad.sum())} NaN or infinite value(s) in a float image")
    lo, hi = float(array.min()), float(array.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ImageError(path, f"float image values span [{lo:.4g}, {hi:.4g}], expected [0, 1]")
    notes.append("float image used as [0, 1] intensities")
    return np.clip(array, 0.0, 1.0)


def _to_rgb_unit(path, array: np.ndarray, notes: list[str], *, high_bit: int | None = None) -> np.ndarray:
    """Any numeric HxW / HxWxC array -> float32 HxWx3 in [0, 1], noting each conversion."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (2, 3, 4)):
        raise ImageError(path, f"unsupported array shape {array.shape} (expected HxW, HxWx1, HxWx3 or HxWx4)")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
        notes.append("1-bit image scaled to 8 bits")
    if array.dtype == np.uint8:
        unit = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16 or (high_bit == 16 and np.issubdtype(array.dtype, np.integer)):
        # 16-bit data keeps its full precision: divide by 65535, never clip to 255.
        unit = np.clip(array.astype(np.float32), 0, 65535) / 65535.0
        notes.append("16-bit image scaled by 1/65535")
    elif np.issubdtype(array.dtype, np.floating):
        unit = _float_to_unit(path, array, notes)
    elif np.issubdtype(array.dtype, np.integer):
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 65535:
            raise ImageError(path, f"integer image values span [{lo}, {hi}], outside 8/16-bit range")
        scale = 255.0 if hi <= 255 and array.dtype.itemsize == 1 else 65535.0
        unit = array.astype(np.float32) / scale
        notes.append(f"{array.dtype} image scaled by 1/{scale:g}")
    else:
        raise ImageError(path, f"unsupported pixel type {array.dtype}")

    if unit.ndim == 2:
        notes.append("grayscale converted to RGB (channel replicated)")
        return np.repeat(unit[..., None], 3, axis=-1)
    if unit.shape[-1] == 2:  # gray + alpha
        notes.append("grayscale+alpha composited over black and converted to RGB")
        return np.repeat(unit[..., :1] * unit[..., 1:], 3, axis=-1)
    if unit.shape[-1] == 4:
        notes.append("alpha composited over black (RGBA -> RGB)")
        return unit[..., :3] * unit[..., 3:]
    return unit


def _read_npy(path: Path, max_pixels: int, notes: list[str]) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as err:  # noqa: BLE001 - any failure means "not a readable array"
        raise ImageError(path, f"not a readable .npy array ({type(err).__name__}: {err})") from None
    if array.ndim < 2:
        raise ImageError(path, f"unsupported array shape {array.shape}")
    _check_size(path, int(array.shape[0]), int(array.shape[1]), max_pixels)
    return _to_rgb_unit(path, np.asarray(array), notes)


def _read_tiff(path: Path, max_pixels: int, notes: list[str]) -> np.ndarray | None:
    """TIFFs through tifffile when present: it keeps 16-bit RGB and float RGB exactly."""
    if tifffile is None:
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if len(page.shape) >= 2:
                height, width = _tiff_page_size(page)
                _check_size(path, height, width, max_pixels)
            array = page.asarray()
            if len(tif.pages) > 1:
                notes.append(f"multi-page TIFF: first of {len(tif.pages)} pages used")
    except ImageError:
        raise
    except Exception:  # noqa: BLE001 - let Pillow try, it reports its own reason
        return None
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # planar (CHW) storage
    return _to_rgb_unit(path, array, notes)


def _read_pillow(path: Path, max_pixels: int, notes: list[str]) -> np.ndarray:
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise ImageError(path, f"absurd size: {err}") from None
    except Exception as err:  # noqa: BLE001 - UnidentifiedImageError, OSError, SyntaxError, ...
        raise ImageError(path, f"not an image file Pillow can identify ({type(err).__name__})") from None
    with image:
        width, height = image.size
        _check_size(path, height, width, max_pixels)  # declared size, before any pixel is decoded
        if getattr(image, "n_frames", 1) > 1:
            notes.append(f"multi-frame {image.format}: first of {image.n_frames} frames used")
        # The decoder's raw mode tells 16-bit RGB PNGs apart; it is gone after load().
        rawmode = image.tile[0].args if getattr(image, "tile", None) else None
        old_limit = Image.MAX_IMAGE_PIXELS
        try:
            Image.MAX_IMAGE_PIXELS = max(max_pixels, 1)
            image.load()
            orientation = image.getexif().get(0x0112, 1)
            if orientation not in (None, 1):
                image = ImageOps.exif_transpose(image)
                notes.append("rotated upright per EXIF orientation")
        except Exception as err:  # noqa: BLE001 - truncated streams raise OSError, bad codecs others
            raise ImageError(path, f"corrupt or truncated image data ({type(err).__name__}: {err})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit
        mode = image.mode
        if mode == "P":
            has_alpha = "transparency" in image.info
            image = image.convert("RGBA" if has_alpha else "RGB")
            notes.append("palette image converted to " + ("RGBA (it has transparency)" if has_alpha else "RGB"))
            mode = image.mode
        elif mode == "1":
            image = image.convert("L")
            notes.append("1-bit image scaled to 8 bits")
            mode = "L"
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGB")
            notes.append(f"{mode} converted to RGB")
            mode = "RGB"
        elif mode == "RGBX":
            image = image.convert("RGB")
            mode = "RGB"
        elif mode == "PA":
            image = image.convert("RGBA")
            mode = "RGBA"
        if isinstance(rawmode, str) and rawmode.startswith(("RGB;16", "RGBA;16")):
            # Pillow has no 48/64-bit RGB mode: it keeps the high byte of each sample,
            # i.e. a correct rescale (v // 256), not a clip, at 8-bit precision.
            notes.append("16-bit RGB PNG decoded by Pillow at 8-bit precision (value range kept)")
        array = np.asarray(image)
        # 16-bit grayscale PNG/TIFF opens as "I;16*" (or "I" in some Pillow versions).
        high_bit = 16 if mode.startswith("I;16") or (mode == "I" and image.format in ("PNG", "TIFF")) else None
    return _to_rgb_unit(path, array, notes, high_bit=high_bit)


def _check_not_empty(path: Path) -> None:
    """Raises `ImageError` for a file that cannot be stat'ed or holds no bytes."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageError(path, f"cannot be read ({err.strerror or err})") from None
    if size == 0:
        raise ImageError(path, "empty file (0 bytes)")


def read_image(path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, list[str]]:
    """Reads one image file safely.

    Returns ``(image, notes)``: ``image`` float32 HxWx3 RGB in [0, 1]; ``notes`` a list
    of the conversions applied (empty for a plain 8-bit RGB file).
    Raises `ImageError` (one line: file and reason) for anything unusable.
    """
    path = Path(path)
    notes: list[str] = []
    if path.is_dir():
        raise ImageError(path, "is a folder, not an image file")
    _check_not_empty(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        image = _read_npy(path, max_pixels, notes)
    else:
        image = _read_tiff(path, max_pixels, notes) if suffix in (".tif", ".tiff") else None
        if image is None:
            image = _read_pillow(path, max_pixels, notes)
    return np.ascontiguousarray(image, dtype=np.float32), notes


def write_image(path, image: np.ndarray) -> Path:
    """Writes a float [0, 1] HxW(x1|3) image as an 8-bit PNG, atomically.

    The file appears complete or not at all (temp file in the same folder, then
    ``os.replace``), so an interrupted run never leaves a truncated PNG behind.
    """
    path = Path(path)
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"write_image({path}): expected HxW or HxWx3, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"write_image({path}): image contains NaN or infinite values")
    pixels = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            Image.fromarray(pixels).save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def is_image_candidate(path) -> bool:
    """True for files whose extension marks them as images we know how to read."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# Why a hidden file with an image extension is not processed. Hidden files are mostly
# editor/OS by-products (macOS ``._photo.jpg`` resource forks, our own ``.x.png.tmp``
# temporaries); they are reported, never skipped silently, since one may hold a face.
HIDDEN_REASON = "hidden file skipped (its name starts with '.'); rename it to process it"


def list_files(root, *, exclude=None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The one folder walker of every command (`scan_folder`, ``data check``, ``enhance``).

    Returns ``(candidates, skipped)``: the sorted files under `root` (sub-folders
    included) to read, and ``(path, reason)`` for each file left out with a reason that
    must be reported: hidden files (name starting with ``.``) whose extension is an
    image's. Hidden non-image files (``.DS_Store``, ``.gitignore``) are system metadata
    and are ignored. Files whose extension is not an image's are candidates here; the
    caller's reader rejects them with its own reason. `root` may be one file. Files
    under `exclude` (a folder, e.g. the command's own output folder inside `root`) are
    left out entirely. A missing `root` raises FileNotFoundError.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if root.is_file():
        return [root], []
    excluded = Path(exclude).resolve() if exclude is not None else None
    candidates: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if excluded is not None and excluded in path.resolve().parents:
            continue
        if path.name.startswith("."):
            if is_image_candidate(path):
                skipped.append((path, HIDDEN_REASON))
            continue
        candidates.append(path)
    return candidates, skipped


def not_an_image_reason(path) -> str:
    """The rejection reason for a file whose extension is not an image's."""
    return f"not an image file (extension {Path(path).suffix or 'none'!r})"


def scan_folder(root, *, max_pixels: int = DEFAULT_MAX_PIXELS, deep: bool = True,
                progress_desc: str | None = None, exclude=None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Checks every file under `root`, going on after bad ones.

    Returns ``(good, bad)``: the sorted paths that read cleanly (possibly with
    conversion notes), and ``(path, reason)`` for each rejected file, including
    files whose extension is not an image's and hidden image files (see
    `list_files`, the walker used; `exclude` is passed on to it). With
    ``deep=False`` only the header is read (size, format), which is fast but misses
    truncated pixel data.
    A missing folder raises FileNotFoundError; a folder with no usable image at all
    is not an exception here: `good` is simply empty and the caller decides.
    """

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    files, skipped = list_files(root, exclude=exclude)
    good: list[Path] = []
    bad: list[tuple[Path, str]] = list(skipped)
    for path in progress(files, desc=progress_desc or f"checking {root}"):
        if not is_image_candidate(path):
            bad.append((path, not_an_image_reason(path)))
            continue
        try:
            if deep:
                read_image(path, max_pixels=max_pixels)
            else:
                check_header(path, max_pixels=max_pixels)
            good.append(path)
        except ImageError as err:
            bad.append((path, err.reason))
    bad.sort(key=lambda item: item[0])
    return good, bad


def check_header(path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Cheap check (no pixel decoding): returns (height, width) or raises `ImageError`."""
    path = Path(path)
    _check_not_empty(path)
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False, mmap_mode="r")
        except Exception as err:  # noqa: BLE001
            raise ImageError(path, f"not a readable .npy array ({type(err).__name__})") from None
        if array.ndim < 2:
            raise ImageError(path, f"unsupported array shape {array.shape}")
        height, width = int(array.shape[0]), int(array.shape[1])
    else:
        # TIFFs as `read_image` reads them (tifffile first: Pillow cannot open e.g.
        # float32 RGB TIFFs), so the header check never rejects a file the reader takes.
        shape = _tiff_header(path) if path.suffix.lower() in (".tif", ".tiff") else None
        if shape is not None:
            height, width = shape
        else:
            try:
                with Image.open(path) as image:
                    width, height = image.size
            except Exception as err:  # noqa: BLE001
                raise ImageError(path, f"not an image file Pillow can identify ({type(err).__name__})") from None
    _check_size(path, height, width, max_pixels)
    return height, width


def _tiff_page_size(page) -> tuple[int, int]:
    """(height, width) of a tifffile page, whatever its axes order."""
    shape = page.shape
    if len(shape) >= 2 and page.axes[:2] == "YX":
        return int(shape[0]), int(shape[1])
    return int(page.imagelength), int(page.imagewidth)


def _tiff_header(path: Path) -> tuple[int, int] | None:
    """(height, width) of a TIFF's first page read with tifffile (no pixel decoding);
    None when tifffile is missing or cannot parse it (then Pillow decides)."""
    if tifffile is None:
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            return _tiff_page_size(tif.pages[0])
    except Exception:  # noqa: BLE001 - not a TIFF tifffile understands: let Pillow report
        return None


# ----------------------------------------------------------------------------- geometry

def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Float image resize with Pillow's antialiased bicubic, per channel in mode "F"; float32 in [0, 1]."""
    if image.shape[:2] == (height, width):
        return image.astype(np.float32)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32)).resize(
        (width, height), Image.Resampling.BICUBIC)) for c in range(image.shape[-1])]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def letterbox(image: np.ndarray, side: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """`image` scaled to fit a side x side square (black bars); returns it and (top, left, h, w) of the content."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    new_h, new_w = max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)
    top, left = (side - new_h) // 2, (side - new_w) // 2
    frame = np.zeros((side, side, 3), np.float32)
    frame[top:top + new_h, left:left + new_w] = resize(image, new_h, new_w)
    return frame, (top, left, new_h, new_w)


def unletterbox(frame: np.ndarray, geometry, height: int, width: int) -> np.ndarray:
    """The content of a letterboxed frame (`letterbox`'s geometry), resized back to height x width."""
    top, left, new_h, new_w = geometry
    return resize(frame[top:top + new_h, left:left + new_w], height, width)
