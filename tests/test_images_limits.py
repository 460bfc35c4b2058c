"""What one image may cost: the pixel limit read from the header, one decode (drafted for
JPEG), only the thumbnail transposed, only the accepted formats' parsers run, and EXIF that
cannot be read ignored. Costs themselves are measured by benchmarks/hostile_bench.py."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import BmpImagePlugin, ExifTags, Image, ImageFile, TiffImagePlugin

from lumen import images
from lumen.config import ConfigError, load_settings
from tests.test_hostile_input import malformed_exif_jpeg

LIMIT = 50_000_000


def write(tmp_path, data: bytes, name="image"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def decodes(monkeypatch):
    """(format, size) of every decode Pillow runs: ImageFile.load with tiles left to decode."""
    seen = []
    load = ImageFile.ImageFile.load

    def spy(self):
        if self.tile:
            seen.append((self.format, self.size))
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return seen


def test_the_pixel_limit_is_read_from_the_header_before_any_decode(tmp_path, decodes):
    path = write(tmp_path, png_header(9400, 9400))  # 88 MP: under Pillow's own limit
    with pytest.raises(images.ImageTooLarge) as refused:
        images.process(path, 512, LIMIT)
    assert str(refused.value) == (
        "must be at most 50 megapixels (MAX_IMAGE_MEGAPIXELS), not 9400x9400"
    )
    assert decodes == []


def test_the_limit_is_on_width_times_height(tmp_path):
    path = write(tmp_path, encoded(Image.new("RGB", (100, 40)), "PNG"))
    images.process(path, 64, 4000)
    with pytest.raises(images.ImageTooLarge):
        images.process(path, 64, 3999)
    tall = write(tmp_path, encoded(Image.new("RGB", (1, 5000)), "PNG"), "tall")
    with pytest.raises(images.ImageTooLarge):
        images.process(tall, 64, 3999)


def test_a_webp_gets_a_quarter_of_the_pixels(tmp_path):
    path = write(tmp_path, encoded(Image.new("RGB", (100, 40)), "WEBP"))
    images.process(path, 64, 16000)
    with pytest.raises(images.ImageTooLarge) as refused:
        images.process(path, 64, 15999)
    assert str(refused.value) == (
        "must be at most 0.003999 megapixels as WebP (a quarter of MAX_IMAGE_MEGAPIXELS), "
        "not 100x40"
    )


def test_pillows_decompression_bomb_limit_still_holds(tmp_path):
    path = write(tmp_path, png_header(14000, 14000))  # 196 MP: over twice Pillow's limit
    with pytest.raises(images.ImageTooLarge):
        images.process(path, 512, 10**9)


@pytest.mark.parametrize(
    ("fmt", "mode", "options"),
    [
        ("JPEG", "RGB", {}),
        ("JPEG", "L", {}),
        ("JPEG", "CMYK", {}),
        ("PNG", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "LA", {}),
        ("PNG", "P", {"transparency": 0}),
        ("PNG", "I;16", {}),
        ("WEBP", "RGB", {}),
        ("GIF", "P", {}),
    ],
)
def test_each_image_is_decoded_once(tmp_path, decodes, fmt, mode, options):
    path = write(tmp_path, encoded(Image.new(mode, (1200, 900)), fmt, **options))
    info, thumb = images.process(path, 256, LIMIT)
    assert (info.width, info.height) == (1200, 900)
    assert len(decodes) == 1, decodes
    small = Image.open(io.BytesIO(thumb))
    assert small.format == "WEBP" and small.size == (256, 192)
    assert small.mode == ("RGBA" if mode in ("RGBA", "LA") or options else "RGB")


def test_a_jpeg_is_decoded_at_a_reduced_scale(tmp_path, decodes):
    path = write(tmp_path, encoded(Image.new("RGB", (4000, 3000), (9, 99, 199)), "JPEG"))
    info, thumb = images.process(path, 256, LIMIT)
    assert (info.width, info.height) == (4000, 3000)
    ((_fmt, (width, height)),) = decodes
    assert width * height <= 4000 * 3000 // 16  # at most a quarter of each side
    assert Image.open(io.BytesIO(thumb)).size == (256, 192)


def test_a_truncated_jpeg_is_refused_although_decoded_at_a_reduced_scale(tmp_path):
    data = encoded(Image.effect_noise((2000, 1500), 60).convert("RGB"), "JPEG")
    path = write(tmp_path, data[: len(data) * 2 // 3])
    with pytest.raises(images.UnsupportedImage, match="cannot be decoded"):
        images.process(path, 256, LIMIT)


def test_only_the_thumbnail_is_transposed(tmp_path, monkeypatch):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # rotated 90 degrees
    path = write(tmp_path, encoded(Image.new("RGB", (4000, 3000)), "JPEG", exif=exif))
    transposed = []
    transpose = Image.Image.transpose

    def spy(self, method):
        transposed.append(self.size)
        return transpose(self, method)

    monkeypatch.setattr(Image.Image, "transpose", spy)
    info, thumb = images.process(path, 512, LIMIT)
    assert (info.width, info.height) == (3000, 4000)
    assert transposed == [(512, 384)]
    assert Image.open(io.BytesIO(thumb)).size == (384, 512)


@pytest.mark.parametrize(
    ("fmt", "parser"),
    [("BMP", BmpImagePlugin.BmpImageFile), ("TIFF", TiffImagePlugin.TiffImageFile)],
)
def test_other_formats_parsers_never_see_the_bytes(tmp_path, monkeypatch, fmt, parser):
    opened = []
    monkeypatch.setattr(parser, "_open", lambda self: opened.append(fmt))
    path = write(tmp_path, encoded(Image.new("RGB", (10, 10)), fmt))
    with pytest.raises(images.UnsupportedImage, match="not a decodable JPEG, PNG, WebP or GIF"):
        images.process(path, 64, LIMIT)
    assert opened == []


def test_a_malformed_exif_block_is_read_as_far_as_it_can_be(tmp_path):
    path = write(tmp_path, malformed_exif_jpeg(120, 80))
    info, thumb = images.process(path, 60, LIMIT)
    assert (info.width, info.height) == (80, 120)
    assert Image.open(io.BytesIO(thumb)).size == (40, 60)


def test_exif_that_cannot_be_read_at_all_counts_as_none(tmp_path, monkeypatch):
    def broken(self):
        raise struct.error("unpack requires a buffer of 2 bytes")

    monkeypatch.setattr(Image.Image, "getexif", broken)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    path = write(tmp_path, encoded(Image.new("RGB", (120, 80)), "JPEG", exif=exif))
    info, thumb = images.process(path, 60, LIMIT)
    assert (info.width, info.height, info.taken_at, info.latitude) == (120, 80, None, None)
    assert Image.open(io.BytesIO(thumb)).size == (60, 40)  # not transposed


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_max_image_megapixels_must_be_a_positive_number(value):
    with pytest.raises(ConfigError, match="MAX_IMAGE_MEGAPIXELS"):
        load_settings({"MAX_IMAGE_MEGAPIXELS": value})
    assert load_settings({}).max_image_megapixels == 50
