"""The one image reader (keyreid.data.images): high-bit-depth images scaled to 8 bits, not
clipped to white; decompression bombs refused from the header by every command that reads
images, as one line (exit 2), and by the service as 413."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from PIL import Image

import keyreid.cli as cli
from keyreid.data.images import image_size, read_image, to_rgb
from keyreid.errors import ImageTooLarge
from tests.serve_helpers import build_index_for_tests, encode

LIMIT = 20_000          # pixels, for the bomb cases (the synthetic images have 128 x 64 = 8,192)


def run_cli(args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["keyreid", *map(str, args)])
    monkeypatch.setattr(cli, "_DEBUG", False)
    monkeypatch.delenv("KEYREID_DEBUG", raising=False)
    monkeypatch.setenv("KEYREID_PROGRESS", "plain")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out, err = capsys.readouterr()
    return (0 if exc.value.code is None else exc.value.code), out, err


def one_error_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def built(tiny_synth, tmp_path_factory):
    return build_index_for_tests(tmp_path_factory.mktemp("image_index"), tiny_synth)


def sixteen_bit_twin(path: str, out: Path) -> Path:
    """The 8-bit image at `path` as a 16-bit grey PNG (v * 257) and its 8-bit grey twin."""
    grey = np.asarray(Image.open(path).convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(out / "sixteen.png")
    Image.fromarray(grey).save(out / "eight.png")
    assert Image.open(out / "sixteen.png").mode.startswith("I;16")
    return out / "sixteen.png"


# ---------------------------------------------------------------------------- conversion by hand
def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 128, 257, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g.png")
    got = np.asarray(read_image(tmp_path / "g.png"))
    # round(v / 257): 0, 0.498 -> 0, 1, 127.5 -> 128, 255; every channel alike
    assert got.shape == (1, 5, 3) and got[0, :, 0].tolist() == [0, 0, 1, 128, 255]
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()
    # what Pillow alone gives (the bug): everything above 255 clipped to white
    assert np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))[0, :, 0].tolist() == [0, 128, 255, 255, 255]


def test_32_bit_and_float_images_by_their_range():
    as_int = Image.fromarray(np.array([[0, 1000, 65535]], np.int32))           # mode I, 16-bit data
    assert as_int.mode == "I" and np.asarray(to_rgb(as_int))[0, :, 0].tolist() == [0, 4, 255]
    small = Image.fromarray(np.array([[0, 100, 255]], np.int32))               # mode I, 8-bit data
    assert np.asarray(to_rgb(small))[0, :, 0].tolist() == [0, 100, 255]
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))            # mode F in 0..1
    assert unit.mode == "F" and np.asarray(to_rgb(unit))[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[-1.0, 0.0, 1.0]], np.float32))           # mode F, own range
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, 128, 255]
    rgb = Image.fromarray(np.array([[[1, 2, 3]]], np.uint8))
    assert np.asarray(to_rgb(rgb)).tolist() == [[[1, 2, 3]]]


def test_16_bit_image_embeds_as_its_8_bit_twin_in_every_path(built, tmp_path, monkeypatch, capsys):
    """The model's embed (used by extract, embed, search, explain, export), the service's upload
    decoding and the real `keyreid extract` all give the 16-bit file the 8-bit twin's embedding."""
    from keyreid.inference import load_model
    from keyreid.serve.uploads import decode_upload

    sixteen = sixteen_bit_twin(built["gallery"][0], tmp_path)
    eight = tmp_path / "eight.png"
    model = load_model(built["checkpoint"], device="cpu")
    e16, e8 = model.embed([sixteen, eight])
    assert np.allclose(e16, e8, atol=1e-6)
    decoded = decode_upload(sixteen.read_bytes(), 10_000_000).image
    assert np.array_equal(np.asarray(decoded), np.asarray(read_image(eight)))

    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(sixteen, folder / "0001_c1s1_000001_00.png")
    code, _, err = run_cli(["extract", built["checkpoint"], folder, "-o", tmp_path / "features"],
                           monkeypatch, capsys)
    assert code == 0, err
    assert np.allclose(np.load(tmp_path / "features" / "features.npy")[0], e8, atol=1e-5)


def _png(path: Path, width: int, height: int, colour_type: int, rows: np.ndarray) -> Path:
    """A 16-bit PNG written by hand (Pillow writes 16 bits only for grey): rows big-endian."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rows)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def test_16_bit_rgb_and_rgba_read_as_their_8_bit_twins(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint16)
    _png(tmp_path / "rgb16.png", 5, 6, 2, (rgb * 257).reshape(6, -1))
    rgba = np.concatenate([rgb, np.full((6, 5, 1), 255, np.uint16)], axis=2)    # opaque
    _png(tmp_path / "rgba16.png", 5, 6, 6, (rgba * 257).reshape(6, -1))
    for name in ("rgb16.png", "rgba16.png"):
        assert np.array_equal(np.asarray(read_image(tmp_path / name)), rgb.astype(np.uint8)), name


def test_transparent_pixels_are_white_everywhere(tmp_path):
    """Palette, grey + alpha and 16-bit grey with a transparent level: transparent pixels are
    composited over white (not the arbitrary colour stored under them), half-transparent ones
    half-way, opaque ones kept; the service's upload decoding gives the same pixels."""
    from keyreid.serve.uploads import decode_upload

    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 10, 20, 30])
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png", transparency=0)                    # index 0 (black) transparent
    Image.fromarray(np.array([[[10, 0], [10, 255], [10, 128]]], np.uint8), "LA").save(tmp_path / "la.png")
    Image.fromarray(np.array([[5, 32768, 65535]], np.uint16)).save(tmp_path / "g16.png", transparency=5)
    expect = {
        "p.png": [[255, 255, 255], [10, 20, 30]],
        # 10 * 128/255 + 255 * 127/255 = 132.0
        "la.png": [[255, 255, 255], [10, 10, 10], [132, 132, 132]],
        "g16.png": [[255, 255, 255], [128, 128, 128], [255, 255, 255]],
    }
    for name, pixels in expect.items():
        assert np.asarray(read_image(tmp_path / name)).tolist() == [pixels], name
    for name in ("p.png", "la.png"):
        decoded = decode_upload((tmp_path / name).read_bytes(), 10_000_000).image
        assert np.array_equal(np.asarray(decoded), np.asarray(read_image(tmp_path / name))), name
    # what Pillow alone gives: the colour stored under the transparent pixel
    assert np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))[0, 0].tolist() == [0, 0, 0]
    opaque = Image.new("RGBA", (1, 1), (1, 2, 3, 255))
    assert np.asarray(to_rgb(opaque)).tolist() == [[[1, 2, 3]]]


def test_cmyk_is_converted(tmp_path):
    Image.new("CMYK", (1, 1), (0, 255, 0, 0)).save(tmp_path / "m.tif")     # full magenta ink
    assert np.asarray(read_image(tmp_path / "m.tif")).tolist() == [[[255, 0, 255]]]


# ---------------------------------------------------------------------------- bombs
@pytest.fixture
def bombs(tmp_path, monkeypatch):
    """A 300 x 300 image (4.5x the lowered limit: Pillow's error) and a 150 x 150 one (1.1x:
    Pillow only warns and would decode it)."""
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", LIMIT)
    folder = tmp_path / "bombs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, side in (("big", 300), ("warn", 150)):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"{name}.jpg")
    return folder


def test_the_reader_refuses_bombs_from_the_header(bombs):
    for name, pixels in (("big", "90,000"), ("warn", "22,500")):
        with pytest.raises(ImageTooLarge) as e:
            read_image(bombs / f"{name}.jpg")
        assert f"{name}.jpg" in str(e.value) and pixels in str(e.value) and "decompression-bomb" in str(e.value)
        with pytest.raises(ImageTooLarge):
            image_size(bombs / f"{name}.jpg")


def test_search_explain_export_refuse_a_bomb_in_one_line(built, bombs, tmp_path, monkeypatch, capsys):
    ckpt = built["checkpoint"]
    gallery = built["gallery"][0]
    for image in (bombs / "big.jpg", bombs / "warn.jpg"):
        cases = [
            ["search", built["index"], image, "--checkpoint", ckpt],
            ["explain", ckpt, image, gallery, "-o", tmp_path / "cam.png"],
            ["explain", ckpt, gallery, image, "-o", tmp_path / "cam.png"],
        ]
        for args in cases:
            code, _, err = run_cli(args, monkeypatch, capsys)
            line = one_error_line(err)
            assert code == 2 and image.name in line and "decompression-bomb" in line, (args, line)
    parity = tmp_path / "parity"
    parity.mkdir()
    shutil.copy(gallery, parity / "a.jpg")
    shutil.copy(bombs / "big.jpg", parity / "b.jpg")
    code, _, err = run_cli(["export", ckpt, "-o", tmp_path / "m.onnx", "--images", parity], monkeypatch, capsys)
    line = one_error_line(err)
    assert code == 2 and "b.jpg" in line and "decompression-bomb" in line
    assert not (tmp_path / "m.onnx").exists()


def test_datasets_check_lists_a_bomb_without_a_traceback(tiny_synth, bombs, tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    shutil.copytree(tiny_synth, root)
    target = root / "bounding_box_train" / "0001_c1s1_999999_00.jpg"
    shutil.copy(bombs / "big.jpg", target)
    code, out, err = run_cli(["datasets", "check", root, "-d", "market1501"], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in out + err
    assert target.name in out + err and "decompression-bomb" in out + err


def test_the_service_answers_413_for_a_bomb_and_keeps_serving(bombs):
    from keyreid.serve.uploads import UploadError, decode_upload

    for name in ("big", "warn"):
        with pytest.raises(UploadError) as e:
            decode_upload((bombs / f"{name}.jpg").read_bytes(), max_pixels=10_000_000)
        assert e.value.status == 413
    # below the limit the same decoding path gives the image
    small = Image.fromarray(np.zeros((20, 10, 3), np.uint8))
    assert decode_upload(encode(small, "PNG"), 10_000_000).image.size == (10, 20)


def test_probing_in_threads_never_lets_a_bomb_through(tiny_synth, bombs):
    """probe_images decodes from threads: the bomb in Pillow's warning range (which Pillow alone
    would decode) is refused among 100 files, the warnings filters are left as they were, and
    only a report that lists everything (datasets check) gets it as a problem."""
    import warnings

    from keyreid.data.loader import probe_images

    good = sorted(str(p) for p in (tiny_synth / "bounding_box_test").iterdir())[:99]
    paths = [*good[:50], str(bombs / "warn.jpg"), *good[50:]]
    filters = list(warnings.filters)
    with pytest.raises(ImageTooLarge) as e:
        probe_images(paths, decode=True, workers=4)
    assert "warn.jpg" in str(e.value) and "decompression-bomb" in str(e.value)
    listed = probe_images(paths, decode=True, workers=4, list_bombs=True)
    assert listed[str(bombs / "warn.jpg")][0] is None and "decompression-bomb" in listed[str(bombs / "warn.jpg")][1]
    assert all(listed[p] == ((64, 128), None) for p in good)
    assert warnings.filters == filters


def test_training_with_on_error_skip_never_skips_a_bomb(tiny_synth, bombs, tmp_path, monkeypatch, capsys):
    """`train` with data.options {on_error: skip} leaves unreadable images out; a bomb stops it
    before training, one line naming the file (without skip the message no longer suggests
    skipping it)."""
    from tests.conftest import tiny_overrides

    root = tmp_path / "data"
    shutil.copytree(tiny_synth, root)
    target = root / "bounding_box_train" / "0001_c1s1_999999_00.jpg"
    shutil.copy(bombs / "warn.jpg", target)
    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\n")
    for options in ("{on_error: skip}", "{on_error: raise}"):
        sets = [a for o in tiny_overrides(root, tmp_path / "run", **{"optim.epochs": 1, "data.options": options})
                for a in ("--set", o)]
        code, _, err = run_cli(["train", config, *sets], monkeypatch, capsys)
        line = one_error_line(err)
        assert code == 2 and str(target) in line and "decompression-bomb" in line and "skip" not in line, line
        assert not (tmp_path / "run" / "last.pt").exists()
