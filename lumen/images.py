"""Image validation, EXIF reading and thumbnails, with Pillow."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
THUMBNAIL_FORMAT, THUMBNAIL_CONTENT_TYPE = "WEBP", "image/webp"


class UnsupportedImage(Exception):
    """Not a decodable JPEG, PNG, WebP or GIF."""


class ImageTooLarge(Exception):
    """More pixels than Pillow's decompression-bomb limit."""


@dataclass
class ImageInfo:
    content_type: str
    width: int
    height: int
    taken_at: datetime | None
    latitude: float | None
    longitude: float | None


def _open(path: Path) -> Image.Image:
    with warnings.catch_warnings():
        # Pillow only warns between one and two times its pixel limit; refuse those too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
            try:
                if image.format not in CONTENT_TYPES:
                    raise UnsupportedImage(f"format {image.format} is not JPEG, PNG, WebP or GIF")
                image.load()  # decodes every byte: a truncated file fails here
            except BaseException:
                image.close()  # a refused file's handle is not left to the garbage collector
                raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(str(exc)) from None
        except UnidentifiedImageError:
            raise UnsupportedImage("not a decodable JPEG, PNG, WebP or GIF") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise UnsupportedImage(f"the image cannot be decoded ({exc})") from None
    return image


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


def inspect(path: Path) -> ImageInfo:
    """Decode the image fully and read what the photo record needs."""
    with _open(path) as image:
        exif = image.getexif()
        width, height = image.size
        # Orientations 5-8 rotate by 90 degrees: the image as seen is the other way round.
        if exif.get(ExifTags.Base.Orientation) in (5, 6, 7, 8):
            width, height = height, width
        lat, lon = _exif_gps(exif)
        return ImageInfo(
            content_type=CONTENT_TYPES[image.format],
            width=width,
            height=height,
            taken_at=_exif_time(exif),
            latitude=lat,
            longitude=lon,
        )


def thumbnail(path: Path, size: int) -> bytes:
    """A WebP at most ``size`` pixels on its long side, turned upright per EXIF orientation."""
    with _open(path) as image:
        upright = ImageOps.exif_transpose(image)
        if upright.mode not in ("RGB", "RGBA"):
            upright = upright.convert("RGBA" if "transparency" in upright.info else "RGB")
        upright.thumbnail((size, size))
        out = io.BytesIO()
        upright.save(out, THUMBNAIL_FORMAT, quality=80)
        return out.getvalue()
