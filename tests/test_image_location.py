"""images.without_location: the copy others download, for each format and each place a
location can hide; the pixels stay byte for byte."""

import io

import pytest
from PIL import ExifTags, Image, ImageChops

from lumen import images

pytestmark = pytest.mark.security


def gps_exif(orientation=6) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "Camera"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 23.76)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 21.0, 7.92)
    return exif


def encoded(fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((48, 32), 60).convert("RGB").save(out, fmt, **kwargs)
    return out.getvalue()


def strip(tmp_path, data: bytes) -> bytes | None:
    path = tmp_path / "upload"
    path.write_bytes(data)
    return images.without_location(path)


def assert_clean_copy(tmp_path, original: bytes, copy: bytes, orientation=6):
    image = Image.open(io.BytesIO(copy))
    image.load()
    exif = image.getexif()
    assert dict(exif.get_ifd(ExifTags.IFD.GPSInfo)) == {}
    assert dict(exif) == ({274: orientation} if orientation else {})
    assert "xmp" not in image.info
    before = Image.open(io.BytesIO(original)).convert("RGB")
    assert ImageChops.difference(before, image.convert("RGB")).getbbox() is None
    assert strip(tmp_path, copy) is None  # nothing locating is left
    assert strip(tmp_path, original) == copy  # the same bytes every time: content-addressed


@pytest.mark.parametrize(
    "fmt, extra",
    [("JPEG", {}), ("PNG", {}), ("WEBP", {"lossless": True})],
)
def test_exif_gps_goes_orientation_and_pixels_stay(tmp_path, fmt, extra):
    original = encoded(fmt, exif=gps_exif().tobytes(), **extra)
    copy = strip(tmp_path, original)
    assert copy is not None and len(copy) < len(original)
    assert_clean_copy(tmp_path, original, copy)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_a_file_without_location_needs_no_copy(tmp_path, fmt):
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Camera"
    extra = {} if fmt == "GIF" else {"exif": exif.tobytes()}
    assert strip(tmp_path, encoded(fmt, **extra)) is None


def test_location_in_xmp_goes_too(tmp_path):
    xmp = b'<x:xmpmeta><rdf:Description exif:GPSLatitude="48,51.396N"/></x:xmpmeta>'
    original = encoded("JPEG", xmp=xmp)
    copy = strip(tmp_path, original)
    assert copy is not None and b"GPSLatitude" not in copy
    assert_clean_copy(tmp_path, original, copy, orientation=None)


def test_an_image_appended_after_the_end_of_a_jpeg_goes(tmp_path):
    """Phones append more JPEGs (MPF: depth maps, previews), each with its own EXIF."""
    hidden = encoded("JPEG", exif=gps_exif().tobytes())
    original = encoded("JPEG") + hidden
    copy = strip(tmp_path, original)
    assert copy is not None and not copy.endswith(hidden) and b"Exif" not in copy
    assert_clean_copy(tmp_path, original, copy, orientation=None)


def test_iptc_and_png_text_profiles_count_as_location(tmp_path):
    jpeg = encoded("JPEG")
    iptc = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x0c\x1c\x02Z\x00\x05Paris\x00"
    segment = b"\xff\xed" + (len(iptc) + 2).to_bytes(2, "big") + iptc
    with_iptc = jpeg[:2] + segment + jpeg[2:]
    copy = strip(tmp_path, with_iptc)
    assert copy is not None and b"Paris" not in copy
    assert_clean_copy(tmp_path, with_iptc, copy, orientation=None)

    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", "exif\n 12\n45786966000049492a00")
    png = encoded("PNG", pnginfo=info)
    copy = strip(tmp_path, png)
    assert copy is not None and b"Raw profile" not in copy
    assert_clean_copy(tmp_path, png, copy, orientation=None)


def same_pixels(a: bytes, b: bytes) -> bool:
    first, second = Image.open(io.BytesIO(a)), Image.open(io.BytesIO(b))
    return ImageChops.difference(first.convert("RGB"), second.convert("RGB")).getbbox() is None


def test_gif_xmp_and_comments_naming_a_place_go(tmp_path):
    gif = encoded("GIF")
    xmp = b"\x21\xff\x0bXMP DataXMP" + b"\x0a<gps>1</g>" + b"\x00"
    comment = b"\x21\xfe\x0cGPS 48.85 N\x00"
    for extra in (xmp, comment):
        original = gif[:-1] + extra + gif[-1:]
        copy = strip(tmp_path, original)
        assert copy is not None and extra not in copy and same_pixels(copy, original)
        assert strip(tmp_path, copy) is None
    looped = io.BytesIO()
    frames = [Image.new("P", (8, 8), n) for n in range(3)]
    frames[0].save(looped, "GIF", save_all=True, append_images=frames[1:], loop=0)
    assert strip(tmp_path, looped.getvalue()) is None  # the loop count says nothing


def test_jpeg_comments_and_unknown_blocks_count_as_location(tmp_path):
    jpeg = encoded("JPEG")
    for marker, payload in [(0xFE, b"shot at GPS 48.85N"), (0xEB, b"JP\x00\x00c2pa manifest")]:
        segment = bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload
        original = jpeg[:2] + segment + jpeg[2:]
        copy = strip(tmp_path, original)
        assert copy is not None and payload not in copy
        assert_clean_copy(tmp_path, original, copy, orientation=None)
    plain = jpeg[:2] + b"\xff\xfe\x00\x07hello" + jpeg[2:]
    assert strip(tmp_path, plain) is None  # a comment that names no place needs no copy


def test_an_unknown_png_chunk_counts_as_location(tmp_path):
    from lumen.images import _png_chunk

    png = encoded("PNG")
    chunk = _png_chunk(b"loCa", b"48.85N 2.35E")
    original = png[:33] + chunk + png[33:]  # after IHDR
    copy = strip(tmp_path, original)
    assert copy is not None and b"loCa" not in copy
    assert_clean_copy(tmp_path, original, copy, orientation=None)


def test_a_file_whose_blocks_cannot_be_walked_is_re_encoded(tmp_path):
    gif = encoded("GIF", comment=b"GPS 48.85 N")
    original = gif[:-1] + b"\x99" + gif[-1:]  # a block no GIF has; Pillow stops before it
    copy = strip(tmp_path, original)
    assert copy is not None and b"GPS" not in copy and same_pixels(copy, original)


def readable_gps(path) -> dict:
    try:
        with Image.open(path) as image:
            return dict(image.getexif().get_ifd(ExifTags.IFD.GPSInfo))
    except Exception:
        return {}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
# A server does not turn Pillow's warnings on damaged EXIF into errors; this suite does.
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_damaged_files_never_keep_a_location_nor_raise(tmp_path, fmt):
    """Every file an upload would accept (it decodes), however its blocks are damaged: the
    answer is a copy without a location, or None for a file that has none to remove."""
    if fmt == "GIF":
        good = encoded("GIF", comment=b"GPS 48.85 N")
    else:
        good = encoded(
            fmt, exif=gps_exif().tobytes(), **({"lossless": True} if fmt == "WEBP" else {})
        )
    damaged = [good + b"trailing junk", good[:-3]]
    for at in range(2, min(len(good), 160), 3):  # every block header near the start
        for value in (0x00, 0xFF, 0x7F):
            damaged.append(good[:at] + bytes([value]) + good[at + 1 :])
    path = tmp_path / "upload"
    checked = 0
    for data in damaged:
        path.write_bytes(data)
        try:
            images.process(path, 64, 50_000_000)
        except (images.UnsupportedImage, images.ImageTooLarge):
            continue  # refused at upload: never stored
        try:
            copy = images.without_location(path)
        except images.UnsupportedImage:
            continue  # refused at upload (415)
        checked += 1
        if copy is None:
            assert readable_gps(path) == {} and b"GPS 48.85" not in data
        else:
            (tmp_path / "copy").write_bytes(copy)
            assert readable_gps(tmp_path / "copy") == {} and b"GPS 48.85" not in copy
    assert checked > 10
