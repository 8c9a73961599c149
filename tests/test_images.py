"""Untrusted uploads: every kind of picture becomes upright RGB, everything else a specific error."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from bot.errors import ImageTooLargeError, InvalidImageError
from bot.images import open_image, thumbnail_jpeg


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims to be width x height: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("mode", "fmt"), [
    ("L", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("I;16", "PNG"), ("LA", "PNG"), ("RGB", "WEBP"),
    ("RGB", "BMP"), ("RGB", "TIFF"), ("1", "PNG"),
])
def test_every_mode_becomes_rgb(mode: str, fmt: str) -> None:
    source = Image.new("RGB", (20, 10), (200, 30, 40)).convert(mode) if mode != "I;16" else \
        Image.fromarray(np.linspace(0, 65535, 200, dtype=np.uint16).reshape(10, 20))
    image = open_image(encode(source, fmt))
    assert image.mode == "RGB" and image.size == (20, 10)


def test_sixteen_bit_keeps_its_contrast() -> None:
    ramp = Image.fromarray(np.linspace(0, 65535, 200, dtype=np.uint16).reshape(10, 20))
    pixels = np.asarray(open_image(encode(ramp, "PNG")))
    assert pixels.min() == 0 and pixels.max() == 255


def test_transparency_is_composited_on_white() -> None:
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert open_image(encode(clear, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.info["transparency"] = 0
    assert open_image(encode(palette, "PNG", transparency=0)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    wide = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    image = open_image(encode(wide, "JPEG", exif=exif.tobytes()))
    assert image.size == (20, 40)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animations_give_their_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (10, 10), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
    red, green, blue = open_image(buffer.getvalue()).getpixel((5, 5))
    assert red > 200 and green < 60 and blue < 60


def test_wrong_extension_does_not_matter() -> None:
    png_bytes = encode(Image.new("RGB", (5, 5)), "PNG")  # served as "photo.jpg"
    assert open_image(png_bytes).size == (5, 5)


def test_not_a_picture_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="not a picture"):
        open_image(b"%PDF-1.7 definitely not an image")


def test_empty_file_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="empty"):
        open_image(b"")


def test_truncated_file_is_refused() -> None:
    data = encode(Image.effect_noise((200, 200), 64).convert("RGB"), "JPEG")
    with pytest.raises(InvalidImageError, match="damaged or truncated"):
        open_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = png_header_only(30000, 30000)
    assert len(bomb) < 200
    with pytest.raises(ImageTooLargeError, match="too many pixels|megapixels"):
        open_image(bomb)


def test_pixel_limit_is_enforced() -> None:
    with pytest.raises(ImageTooLargeError, match="limit is 1 megapixels"):
        open_image(encode(Image.new("RGB", (1200, 1000)), "PNG"), max_pixels=1_000_000)


def test_oversized_file_is_refused(monkeypatch) -> None:
    import bot.images

    monkeypatch.setattr(bot.images, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(ImageTooLargeError, match="larger than"):
        open_image(b"\x89PNG" + b"\0" * 200)


def test_thumbnail_fits_in_512() -> None:
    data = thumbnail_jpeg(Image.new("RGB", (2000, 1000), (9, 9, 9)))
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (512, 256)
