"""Image validation, EXIF reading and thumbnails, with Pillow."""

from __future__ import annotations

import io
import logging
import mmap
import re
import warnings
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

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


# --- the copy others download: no location metadata ----------------------------------------------

# XMP and PNG text that may say where a photo was taken (exif:GPS..., photoshop:City, ...).
_XMP_LOCATION = re.compile(
    rb"gps|latitude|longitude|location|city|country|state|sublocation", re.IGNORECASE
)
_JPEG_KEPT_APP = ((0xE0, b"JFIF\x00"), (0xE0, b"JFXX\x00"), (0xE2, b"ICC_PROFILE\x00"))
_JPEG_KEPT_APP += ((0xEE, b"Adobe"),)  # the colour transform: needed to decode right
# APPn segments that say nothing of a place, and are dropped (MPF: the images it points to,
# after the end of the first, are dropped and checked for EXIF).
_JPEG_HARMLESS_APP = ((0xE2, b"MPF\x00"), (0xEC, b"Ducky"))
_PNG_METADATA = (b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME")
# Ancillary PNG chunks kept (they change how the pixels show); any other one is dropped, and
# an unknown one counts as locating: it may hold anything.
_PNG_KEPT = {b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs", b"bKGD", b"hIST"}
_PNG_KEPT |= {b"sPLT", b"acTL", b"fcTL", b"fdAT", b"cICP", b"mDCv", b"cLLi"}
_WEBP_KEPT = (b"VP8X", b"ICCP", b"ANIM", b"ANMF", b"ALPH", b"VP8 ", b"VP8L")
_GIF_KEPT_APPLICATIONS = (b"NETSCAPE2.0", b"ANIMEXTS1.0")  # the loop count


class _Malformed(Exception):
    """The container cannot be walked safely: the pixels are re-encoded instead."""


def without_location(path: Path) -> bytes | None:
    """The file without location metadata, for anyone but its owner, or None when it carries
    none (EXIF GPS, location XMP or IPTC, PNG text profiles, images appended to a JPEG).

    Every metadata block goes, not only the location: EXIF (maker notes can hold GPS too), XMP,
    IPTC, comments. Kept: the pixels byte for byte, the ICC profile, and the EXIF orientation
    alone, so the copy looks the same. The same input always gives the same bytes, so the copy
    is content-addressed and shared like the original. The file is mapped, not read: only a
    copy that is made costs its size in memory."""
    with Image.open(path, formats=ACCEPTED_FORMATS) as image:
        kind = image.format
        try:
            orientation = image.getexif().get(ExifTags.Base.Orientation)
        except Exception:
            orientation = None  # unreadable EXIF: the walk drops it, and counts it as locating
    orientation = orientation if orientation in range(2, 9) else None
    walk = {"JPEG": _jpeg, "PNG": _png, "WEBP": _webp, "GIF": _gif}[kind]
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        view = memoryview(data)
        try:
            pieces, located = walk(data, view, orientation)
            return b"".join(pieces) if located else None
        except (_Malformed, IndexError, ValueError):
            pass
        finally:
            pieces = None
            view.release()
    try:
        return _reencoded(path)
    except Exception as exc:
        raise UnsupportedImage(f"its metadata cannot be removed ({exc})") from None


def _exif_locates(payload: bytes) -> bool:
    exif = Image.Exif()
    try:
        exif.load(bytes(payload))
        return ExifTags.IFD.GPSInfo in exif or bool(exif.get_ifd(ExifTags.IFD.GPSInfo))
    except Exception:
        return True  # unreadable: it may hold anything


def _orientation_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return exif.tobytes()  # starts with b"Exif\0\0"


def _jpeg_scan_end(data, pos: int) -> int:
    """Where the entropy-coded data that starts at ``pos`` ends: the next marker that is not a
    stuffed byte (FF00) or a restart marker."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            raise _Malformed("scan data runs to the end")
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1
            continue
        return pos


def _jpeg(data, view, orientation: int | None) -> tuple[list, bool]:
    if data[:2] != b"\xff\xd8":
        raise _Malformed("no SOI")
    kept, located, pos = [], False, 2
    while True:
        if data[pos] != 0xFF:
            raise _Malformed("not a marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI: what follows (MPF's extra images) goes too
            located = located or data.find(b"Exif\x00\x00", pos + 2) >= 0
            break
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > len(data) or end < pos + 4:
            raise _Malformed("segment length")
        if marker == 0xDA:  # SOS: its header, then the scan up to the next marker
            end = _jpeg_scan_end(data, end)
            kept.append(view[pos:end])
        elif 0xE0 <= marker <= 0xEF or marker == 0xFE:  # APPn and comments: metadata
            payload = data[pos + 4 : end]
            if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
                located = located or _exif_locates(payload)
            elif marker in (0xE1, 0xFE):  # XMP, a comment
                located = located or bool(_XMP_LOCATION.search(payload))
            elif not any(
                marker == m and payload.startswith(p)
                for m, p in _JPEG_KEPT_APP + _JPEG_HARMLESS_APP
            ):
                located = True  # IPTC (City, Sub-location...), C2PA, or unknown: may locate
            if any(marker == m and payload.startswith(p) for m, p in _JPEG_KEPT_APP):
                kept.append(view[pos:end])
        else:
            kept.append(view[pos:end])
        pos = end
    if orientation:
        exif = _orientation_exif(orientation)
        segment = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
        at = 1 if kept and kept[0][1] == 0xE0 else 0  # after JFIF, which must come first
        kept.insert(at, segment)
    return [b"\xff\xd8", *kept, b"\xff\xd9"], located


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body).to_bytes(4, "big")
    return len(body).to_bytes(4, "big") + kind + body + crc


def _png(data, view, orientation: int | None) -> tuple[list, bool]:
    kept, located, pos = [view[:8]], False, 8
    while True:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, end = data[pos + 4 : pos + 8], pos + 12 + length
        if end > len(data):
            raise _Malformed("chunk length")
        if kind in _PNG_METADATA:
            body = data[pos + 8 : pos + 8 + length]
            keyword = body.split(b"\x00", 1)[0]
            if kind == b"eXIf":
                located = located or _exif_locates(body)
            elif keyword.startswith(b"Raw profile type"):  # ImageMagick's EXIF and IPTC
                located = True
            elif keyword == b"XML:com.adobe.xmp":  # in iTXt it may be compressed: locating
                located = located or kind != b"tEXt" or bool(_XMP_LOCATION.search(body))
        elif kind[0] & 0x20 and kind not in _PNG_KEPT:  # ancillary and unknown
            located = True
        else:
            if kind == b"IDAT" and orientation:
                kept.append(_png_chunk(b"eXIf", _orientation_exif(orientation)[6:]))
                orientation = None
            kept.append(view[pos:end])
        pos = end
        if kind == b"IEND":
            return kept, located


def _webp(data, view, orientation: int | None) -> tuple[list, bool]:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise _Malformed("not RIFF WEBP")
    kept, located, pos = [], False, 12
    end_of_riff = min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    while pos + 8 <= end_of_riff:
        kind, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        end = pos + 8 + size + (size & 1)
        if pos + 8 + size > len(data):
            raise _Malformed("chunk length")
        if kind == b"EXIF":
            located = located or _exif_locates(data[pos + 8 : pos + 8 + size])
        elif kind == b"XMP ":
            located = located or bool(_XMP_LOCATION.search(data[pos + 8 : pos + 8 + size]))
        elif kind == b"VP8X":
            kept.append(bytearray(data[pos:end]))
        elif kind in _WEBP_KEPT:
            kept.append(view[pos:end])
        else:
            located = True  # unknown: it may hold anything
        pos = end
    if not located:
        return [], False
    if not kept or not isinstance(kept[0], bytearray):
        raise _Malformed("metadata without VP8X")
    kept[0][8] &= ~0x0C  # the EXIF and XMP flags
    if orientation:
        exif = _orientation_exif(orientation)[6:]
        kept.append(b"EXIF" + len(exif).to_bytes(4, "little") + exif + b"\0" * (len(exif) & 1))
        kept[0][8] |= 0x08
    size = 4 + sum(len(chunk) for chunk in kept)
    return [b"RIFF", size.to_bytes(4, "little"), b"WEBP", *kept], True


def _gif_sub_blocks_end(data, pos: int) -> int:
    """The end of the data sub-blocks that start at ``pos`` (after their zero terminator)."""
    while (size := data[pos]) != 0:
        pos += 1 + size
    return pos + 1


def _gif(data, view, orientation: int | None) -> tuple[list, bool]:
    """GIF has no EXIF: XMP rides in an application extension, text in comments."""
    if data[:3] != b"GIF":
        raise _Malformed("no GIF header")
    pos = 13
    if data[10] & 0x80:  # the global colour table
        pos += 3 << ((data[10] & 0x07) + 1)
    kept, located = [view[:pos]], False
    while True:
        block = data[pos]
        if block == 0x3B:  # the trailer: anything after it goes
            located = located or pos + 1 < len(data)
            break
        if block == 0x2C:  # an image: descriptor, local colour table, LZW data
            end = pos + 10
            if data[pos + 9] & 0x80:
                end += 3 << ((data[pos + 9] & 0x07) + 1)
            end = _gif_sub_blocks_end(data, end + 1)
            kept.append(view[pos:end])
        elif block == 0x21:
            label, end = data[pos + 1], _gif_sub_blocks_end(data, pos + 2)
            if label == 0xFF:  # an application extension, named in its first sub-block
                name = data[pos + 3 : pos + 14]
                if name in _GIF_KEPT_APPLICATIONS:
                    kept.append(view[pos:end])
                elif name == b"XMP DataXMP":
                    located = located or bool(_XMP_LOCATION.search(data[pos + 14 : end]))
                else:
                    located = True  # unknown: it may hold anything
            elif label == 0xFE:  # a comment
                located = located or bool(_XMP_LOCATION.search(data[pos + 2 : end]))
            else:  # graphic control, plain text: part of how it shows
                kept.append(view[pos:end])
        else:
            raise _Malformed("unknown block")
        pos = end
    return [*kept, b"\x3b"], located


def _reencoded(path: Path) -> bytes:
    """The pixels alone, turned upright, re-encoded: for files whose blocks cannot be walked."""
    # Only files process() accepted come here: its pixel limit already held.
    with _open(path, Image.MAX_IMAGE_PIXELS) as image:
        kind = image.format
        icc = image.info.get("icc_profile")
        # Pillow writes back some of what it read (a GIF's comment) unless told otherwise.
        extra = {"exif": b"", "xmp": b"", "comment": b""}
        if icc and kind != "GIF":
            extra["icc_profile"] = icc
        out = io.BytesIO()
        if getattr(image, "n_frames", 1) > 1:
            image.save(out, kind, save_all=True, **extra)
        else:
            upright = ImageOps.exif_transpose(image)
            for key in ("comment", "exif", "xmp", "extension"):
                upright.info.pop(key, None)
            if kind == "JPEG":
                extra["quality"] = 95
            upright.save(out, kind, **extra)
        return out.getvalue()
