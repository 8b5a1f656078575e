"""Pictures and arrays for the client: PNG data URLs, segmentation outlines and the viewer's arrays.

The page draws images itself (window presets, slice slider, overlays), so the service sends arrays rather
than rendered pictures: :func:`view_array` packs one as gzip-compressed little-endian bytes in base64
with its shape and type. CT stays in Hounsfield units (int16) so that the page can window it; other images
are sent as 8-bit. The API's images (Grad-CAM overlays from :func:`medlens.deploy.explain.write_overlay`,
segmentation outlines from :func:`outline_png`) are PNG data URLs.
"""

from __future__ import annotations

import base64
import gzip
import io
import math

import numpy as np

VIEW_MAX_SIDE = 1024
"""Longest in-plane side of a view; larger images are sent subsampled (``step`` in the view)."""
OUTLINE_RGB = (255, 214, 0)
PNG_SIZE = 256


def png_data_url(data: bytes) -> str:
    """A ``data:image/png;base64,...`` URL of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def view_array(array: np.ndarray) -> dict:
    """``{"shape", "dtype", "data"}`` of an array: ``data`` is base64 of the gzip of its C-order bytes
    (little-endian), which the page inflates with the browser's ``DecompressionStream``."""
    array = np.ascontiguousarray(array)
    data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return {"shape": list(array.shape), "dtype": str(array.dtype),
            "data": base64.b64encode(gzip.compress(data, compresslevel=1)).decode("ascii")}


def view_step(shape: tuple[int, ...]) -> int:
    """Subsampling step that brings the in-plane sides (last two axes) to at most :data:`VIEW_MAX_SIDE`."""
    return max(1, math.ceil(max(shape[-2:]) / VIEW_MAX_SIDE))


def as_hu16(hu: np.ndarray) -> np.ndarray:
    """Hounsfield units as int16 (rounded, clipped to the type's range)."""
    return np.clip(np.rint(hu), -32768, 32767).astype(np.int16)


def as_uint8(image: np.ndarray) -> np.ndarray:
    """Intensities scaled to 0-255: integer types by their type's maximum, floats by their own min and max."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.integer):
        return np.round(image.astype(np.float64) * (255.0 / np.iinfo(image.dtype).max)).clip(0, 255).astype(np.uint8)
    low, high = float(np.nanmin(image)), float(np.nanmax(image))
    scaled = (image.astype(np.float64) - low) / (high - low) if high > low else np.zeros(image.shape)
    return np.round(np.nan_to_num(scaled) * 255.0).astype(np.uint8)


def outline_png(gray: np.ndarray, mask: np.ndarray, size: int = PNG_SIZE) -> bytes:
    """PNG of a 2D image (values in [0, 1]) with the boundary of every labelled region of ``mask`` drawn
    on it (the pixels of a region that touch another label, :func:`skimage.segmentation.find_boundaries`
    in ``inner`` mode), enlarged by an integer factor (nearest neighbour) to about ``size`` pixels."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    gray = np.clip(np.asarray(gray, dtype=np.float32), 0.0, 1.0)
    rgb = np.repeat((gray * 255.0 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
    edges = find_boundaries(np.asarray(mask), mode="inner") & (np.asarray(mask) > 0)
    rgb[edges] = OUTLINE_RGB
    zoom = max(1, round(size / max(gray.shape)))
    rgb = np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def largest_slice(mask: np.ndarray) -> int:
    """Index along the first axis of the slice with the most foreground (the middle one when empty)."""
    areas = (np.asarray(mask) > 0).reshape(len(mask), -1).sum(axis=1)
    return int(np.argmax(areas)) if areas.any() else len(mask) // 2
