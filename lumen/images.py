"""Image validation, EXIF reading and thumbnails, with Pillow."""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from PIL import ExifTags, Image, UnidentifiedImageError

log = logging.getLogger(__name__)

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
ACCEPTED_FORMATS = tuple(CONTENT_TYPES)
THUMBNAIL_FORMAT, THUMBNAIL_CONTENT_TYPE = "WEBP", "image/webp"


class UnsupportedImage(Exception):
    """Not a decodable JPEG, PNG, WebP or GIF; ``str()`` is the rule it broke."""


class ImageTooLarge(Exception):
    """More pixels than MAX_IMAGE_MEGAPIXELS (or Pillow's decompression-bomb limit); ``str()``
    is the rule it broke."""


@dataclass
class ImageInfo:
    content_type: str
    width: int
    height: int
    taken_at: datetime | None
    latitude: float | None
    longitude: float | None


# Orientations 2-8 and the transposition that turns each upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Modes Pillow resamples well; any other (palette, 1-bit, 16-bit) is expanded first.
_RESAMPLED_MODES = ("L", "LA", "RGB", "RGBA", "CMYK")


# Decoding costs about 4 bytes per pixel (JPEG much less: it is decoded at reduced scale),
# except WebP: Pillow decodes every WebP with libwebp's animation decoder, which holds two
# full RGBA canvases, then copies the frame out and into the image, about 16 bytes per pixel.
# A WebP gets a quarter of the pixels, so that no format costs more than the others.
WEBP_SHARE = 4


def pixel_rule(max_pixels: int, image_format: str | None = None) -> str:
    if image_format == "WEBP":
        return (
            f"must be at most {max_pixels // WEBP_SHARE / 1e6:g} megapixels as WebP "
            f"(a quarter of MAX_IMAGE_MEGAPIXELS)"
        )
    return f"must be at most {max_pixels / 1e6:g} megapixels (MAX_IMAGE_MEGAPIXELS)"


def _open(path: Path, max_pixels: int) -> Image.Image:
    """The image with its header read and nothing decoded yet, or the reason it is refused.
    Only the accepted formats' parsers ever see the bytes."""
    with warnings.catch_warnings():
        # Pillow only warns between one and two times its pixel limit; refuse those too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(path, formats=ACCEPTED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            # Only when MAX_IMAGE_MEGAPIXELS is set above Pillow's own limit.
            raise ImageTooLarge(pixel_rule(min(max_pixels, Image.MAX_IMAGE_PIXELS))) from None
        except UnidentifiedImageError:
            raise UnsupportedImage("not a decodable JPEG, PNG, WebP or GIF") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise UnsupportedImage(f"the image cannot be decoded ({exc})") from None
    if image.format not in CONTENT_TYPES:  # MPO: a JPEG with more images in it
        image.close()
        raise UnsupportedImage(f"format {image.format} is not JPEG, PNG, WebP or GIF")
    width, height = image.size
    allowed = max_pixels // WEBP_SHARE if image.format == "WEBP" else max_pixels
    if width * height > allowed:  # from the header: before any pixel is decoded
        image.close()
        raise ImageTooLarge(f"{pixel_rule(max_pixels, image.format)}, not {width}x{height}")
    return image


def _decode_thumbnail(image: Image.Image, size: int) -> Image.Image:
    """Decode the image, once, into a thumbnail at most ``size`` on each side. JPEGs are
    decoded at the smallest DCT scale that still covers the thumbnail (Pillow's draft), other
    formats are reduced by whole factors before resampling; either way all of the image data
    (of the first frame) is decoded, so a truncated or corrupt file fails here."""
    try:
        if image.mode not in _RESAMPLED_MODES:
            image.load()
            image = image.convert("RGBA" if image.has_transparency_data else "RGB")
        image.thumbnail((size, size))  # drafts and loads; a no-op on a small image
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnsupportedImage(f"the image cannot be decoded ({exc})") from None
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    return image


def _metadata(image: Image.Image) -> tuple[int | None, datetime | None, float | None, float | None]:
    """(orientation, taken_at, latitude, longitude) from the EXIF block. EXIF is optional and
    often malformed (Pillow raises struct.error, ValueError, ... on bad entries): a block that
    cannot be read counts as no EXIF, and the photo is kept as its pixels are."""
    try:
        exif = image.getexif()
        orientation = exif.get(ExifTags.Base.Orientation)
        taken_at = _exif_time(exif)
        latitude, longitude = _exif_gps(exif)
    except Exception as exc:  # whatever the parser raises, it means "no usable metadata"
        log.info("unreadable EXIF ignored", extra={"error": type(exc).__name__})
        return None, None, None, None
    return orientation if orientation in _UPRIGHT else None, taken_at, latitude, longitude


def _exif_time(exif: Image.Exif) -> datetime | None:
    """When the photo was taken, in UTC. EXIF keeps the camera's local time and, in newer files,
    its UTC offset (OffsetTimeOriginal); without one the local time is taken as UTC."""
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    raw = sub.get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
    if not raw:
        return None
    try:
        local = datetime.strptime(str(raw).strip("\x00 "), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    offset = str(sub.get(ExifTags.Base.OffsetTimeOriginal) or "").strip("\x00 ")
    try:
        zone = datetime.strptime(offset, "%z").tzinfo if offset else UTC
    except ValueError:
        zone = UTC
    return local.replace(tzinfo=zone).astimezone(UTC)


def _degrees(value, ref) -> float | None:
    try:
        d, m, s = (float(part) for part in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    result = d + m / 60 + s / 3600
    return -result if str(ref).upper() in ("S", "W") else result


def _exif_gps(exif: Image.Exif) -> tuple[float | None, float | None]:
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    if not gps:
        return None, None
    lat = _degrees(gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef))
    lon = _degrees(gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None, None
    return lat, lon


def process(path: Path, thumbnail_size: int, max_pixels: int) -> tuple[ImageInfo, bytes]:
    """Validate the image, read what the photo record needs, and make its thumbnail: a WebP
    at most ``thumbnail_size`` pixels on its long side, turned upright per EXIF orientation.

    Raises ImageTooLarge above ``max_pixels`` (checked from the header, before decoding) and
    UnsupportedImage for anything but a decodable JPEG, PNG, WebP or GIF. The image is decoded
    once, at reduced scale where the format allows; only the thumbnail is ever transposed."""
    with _open(path, max_pixels) as image:
        content_type = CONTENT_TYPES[image.format]
        width, height = image.size
        small = _decode_thumbnail(image, thumbnail_size)
        orientation, taken_at, latitude, longitude = _metadata(image)
    if orientation is not None:
        small = small.transpose(_UPRIGHT[orientation])
        if orientation >= 5:  # a quarter turn: the image as seen is the other way round
            width, height = height, width
    out = io.BytesIO()
    small.save(out, THUMBNAIL_FORMAT, quality=80)
    info = ImageInfo(content_type, width, height, taken_at, latitude, longitude)
    return info, out.getvalue()
