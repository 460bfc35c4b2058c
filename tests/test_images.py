"""Pillow-backed image reading: EXIF time, GPS, orientation, thumbnails."""

import io
from datetime import UTC, datetime
from fractions import Fraction

import pytest
from PIL import ExifTags, Image

from lumen import images


def exif_jpeg(width=120, height=80, orientation=None, when=None, gps=None, offset=None) -> bytes:
    exif = Image.Exif()
    if orientation:
        exif[ExifTags.Base.Orientation] = orientation
    if when:
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = when
    if offset:
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.OffsetTimeOriginal] = offset
    if gps:
        (lat, lat_ref), (lon, lon_ref) = gps

        def dms(value):
            d = int(value)
            m = int((value - d) * 60)
            s = Fraction((value - d - m / 60) * 3600).limit_denominator(1000)
            return (Fraction(d), Fraction(m), s)

        gps_ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
        gps_ifd[ExifTags.GPS.GPSLatitudeRef] = lat_ref
        gps_ifd[ExifTags.GPS.GPSLatitude] = dms(lat)
        gps_ifd[ExifTags.GPS.GPSLongitudeRef] = lon_ref
        gps_ifd[ExifTags.GPS.GPSLongitude] = dms(lon)
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, "JPEG", exif=exif)
    return out.getvalue()


def write(tmp_path, data: bytes):
    path = tmp_path / "image"
    path.write_bytes(data)
    return path


MAX_PIXELS = 50_000_000


def inspect(path):
    return images.process(path, 512, MAX_PIXELS)[0]


def thumbnail(path, size):
    return images.process(path, size, MAX_PIXELS)[1]


def test_reads_exif_time_and_gps(tmp_path):
    data = exif_jpeg(when="2024:07:14 18:30:05", gps=((52.52, "N"), (13.405, "E")))
    info = inspect(write(tmp_path, data))
    assert info.taken_at == datetime(2024, 7, 14, 18, 30, 5, tzinfo=UTC)
    assert info.latitude == pytest.approx(52.52, abs=1e-4)
    assert info.longitude == pytest.approx(13.405, abs=1e-4)


def test_exif_utc_offset_gives_the_instant_in_utc(tmp_path):
    info = inspect(write(tmp_path, exif_jpeg(when="2024:07:14 18:30:05", offset="+02:00")))
    assert info.taken_at == datetime(2024, 7, 14, 16, 30, 5, tzinfo=UTC)
    broken = inspect(write(tmp_path, exif_jpeg(when="2024:07:14 18:30:05", offset="x")))
    assert broken.taken_at == datetime(2024, 7, 14, 18, 30, 5, tzinfo=UTC)


def test_southern_and_western_coordinates_are_negative(tmp_path):
    info = inspect(write(tmp_path, exif_jpeg(gps=((23.55, "S"), (46.63, "W")))))
    assert info.latitude == pytest.approx(-23.55, abs=1e-4)
    assert info.longitude == pytest.approx(-46.63, abs=1e-4)


def test_orientation_swaps_size_and_turns_the_thumbnail_upright(tmp_path):
    path = write(tmp_path, exif_jpeg(120, 80, orientation=6))  # rotated 90 degrees
    info = inspect(path)
    assert (info.width, info.height) == (80, 120)
    thumb = Image.open(io.BytesIO(thumbnail(path, 60)))
    assert thumb.size == (40, 60)


def test_no_exif_gives_nulls(tmp_path):
    info = inspect(write(tmp_path, exif_jpeg()))
    assert (info.taken_at, info.latitude, info.longitude) == (None, None, None)


def test_unsupported_formats_are_refused(tmp_path):
    out = io.BytesIO()
    Image.new("RGB", (10, 10)).save(out, "BMP")
    with pytest.raises(images.UnsupportedImage):
        inspect(write(tmp_path, out.getvalue()))
    with pytest.raises(images.UnsupportedImage):
        inspect(write(tmp_path, b"\xff\xd8\xff\xe0 not really a jpeg"))
