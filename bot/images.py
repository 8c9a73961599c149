"""Untrusted bytes to a safe RGB picture: size caps, decompression-bomb guard, EXIF, modes, first frame."""

from __future__ import annotations

import io
import logging
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageTooLargeError, InvalidImageError

log = logging.getLogger(__name__)

# Discord's default upload limit for bots is 10 MiB (25 MiB on boosted servers); more is never a photo worth reading.
MAX_IMAGE_BYTES = 25 * 1024 * 1024
# 40 megapixels covers any phone camera; a 30000x30000 PNG bomb (900 MP) is refused before decoding.
MAX_IMAGE_PIXELS = 40_000_000
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "MPO"})


def open_image(data: bytes, *, draft_size: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode untrusted bytes into an upright RGB picture, or raise a specific `InvalidImageError`.

    `draft_size` lets JPEG decoding skip detail that a `draft_size`-pixel result would not show.
    """
    if not data:
        raise InvalidImageError("The file is empty.")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLargeError(f"The file is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise InvalidImageError(f"{image.format or 'This'} files are not supported; send a JPEG, PNG, GIF or WebP.")
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"The picture is {width}x{height} pixels; the limit is {max_pixels // 1_000_000} megapixels."
                )
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.seek(0)  # animated GIF/WebP: the first frame
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError("The picture has too many pixels to decode safely.") from error
    except UnidentifiedImageError as error:
        raise InvalidImageError("That file is not a picture clipbot can read (JPEG, PNG, GIF or WebP).") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        log.debug("undecodable image: %s", error)
        raise InvalidImageError("The picture is damaged or truncated and cannot be decoded.") from error
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any mode (L, P, RGBA, CMYK, I;16, F) to RGB on white."""
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as error:  # a broken EXIF block should not cost the picture
        log.debug("ignoring unreadable EXIF: %s", error)
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _high_depth_to_l(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Scale a 16-bit or float greyscale picture into 8 bits by its own range."""
    import numpy as np

    array = np.asarray(image, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    return Image.fromarray(scaled.astype(np.uint8))


def thumbnail_jpeg(image: Image.Image, max_side: int = 512, quality: int = 85) -> bytes:
    """A display-ready JPEG whose longest side is at most `max_side` pixels."""
    picture = image if image.mode == "RGB" else to_rgb(image)
    if max(picture.size) > max_side:
        picture = picture.copy()
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()
