"""Tiny fake dataset trees in the official layouts, for the adapter tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

_JPEG_CACHE: dict[tuple[int, int], bytes] = {}


def jpeg_bytes(w: int = 8, h: int = 4) -> bytes:
    if (w, h) not in _JPEG_CACHE:
        buf = io.BytesIO()
        Image.new("RGB", (w, h), (120, 60, 30)).save(buf, format="JPEG")
        _JPEG_CACHE[(w, h)] = buf.getvalue()
    return _JPEG_CACHE[(w, h)]


def write_jpeg(path: Path, w: int = 8, h: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(w, h))
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------------------------ Market

MARKET_FILES = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg",
                           "0007_c3s1_000101_01.jpg", "0007_c6s2_004001_02.jpg"],
    "query": ["0003_c1s1_000201_00.jpg", "0005_c4s1_000301_00.jpg"],
    "bounding_box_test": ["0003_c2s1_000211_01.jpg", "0003_c1s1_000299_02.jpg",
                          "0005_c5s1_000311_01.jpg", "0000_c1s1_000001_01.jpg",
                          "-1_c3s1_000002_01.jpg"],
}


def make_market(root: Path, release_dir: bool = False) -> Path:
    data = root / "Market-1501-v15.09.15" if release_dir else root
    for folder, names in MARKET_FILES.items():
        (data / folder).mkdir(parents=True, exist_ok=True)
        for n in names:
            write_jpeg(data / folder / n)
        (data / folder / "Thumbs.db").write_bytes(b"\0\1")  # shipped in the real release
    return data


DUKE_FILES = {
    "bounding_box_train": ["0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg", "0008_c8_f0000001.jpg"],
    "query": ["0005_c1_f0001234.jpg"],
    "bounding_box_test": ["0005_c3_f0001300.jpg", "0005_c1_f0001299.jpg", "0412_c7_f0000003.jpg"],
}


def make_duke(root: Path) -> Path:
    data = root / "DukeMTMC-reID"
    for folder, names in DUKE_FILES.items():
        for n in names:
            write_jpeg(data / folder / n)
    return data


# ------------------------------------------------------------------------------------ MSMT17

MSMT_LISTS = {
    "list_train.txt": [("0000/0000_000_01_0303morning_0015_0.jpg", 0),
                       ("0000/0000_001_03_0303morning_0017_1.jpg", 0),
                       ("0001/0001_000_15_0303noon_0100_0.jpg", 1)],
    "list_val.txt": [("0002/0002_000_07_0303noon_0200_0.jpg", 2)],
    "list_query.txt": [("0000/0000_000_02_0303afternoon_0001_0.jpg", 0)],
    "list_gallery.txt": [("0000/0000_001_04_0303afternoon_0002_0.jpg", 0),
                         ("0001/0001_000_05_0303afternoon_0003_0.jpg", 1)],
}


def make_msmt17(root: Path, version: str = "V1") -> Path:
    data = root / f"MSMT17_{version}"
    train_dir, test_dir = (("train", "test") if version == "V1"
                           else ("mask_train_v2", "mask_test_v2"))
    for list_name, rows in MSMT_LISTS.items():
        folder = data / (train_dir if list_name in ("list_train.txt", "list_val.txt") else test_dir)
        for rel, _ in rows:
            write_jpeg(folder / rel)
        (data / list_name).write_text("".join(f"{rel} {pid}\n" for rel, pid in rows))
    return data


# ------------------------------------------------------------------------------------ VeRi

VERI_FILES = {
    "image_train": ["0001_c001_00016450_0.jpg", "0001_c002_00016460_1.jpg",
                    "0002_c020_00020000_0.jpg"],
    "image_query": ["0003_c004_00030600_0.jpg"],
    "image_test": ["0003_c005_00030700_0.jpg", "0003_c005_00030705_1.jpg",
                   "0004_c004_00030800_0.jpg"],
}
VERI_LISTS = {"image_train": "name_train.txt", "image_query": "name_query.txt",
              "image_test": "name_test.txt"}


def veri_keypoint_line(prefix: str, name: str, seed: int, orientation: int | None = 3) -> str:
    rng = np.random.default_rng(seed)
    xy = rng.integers(0, 4, size=(20, 2))
    xy[5] = -1  # an absent point
    nums = " ".join(f"{x} {y}" for x, y in xy)
    tail = "" if orientation is None else f" {orientation}"
    return f"{prefix}/{name} {nums}{tail}\n"


def make_veri(root: Path, keypoints: bool = True) -> Path:
    data = root / "VeRi"
    for folder, names in VERI_FILES.items():
        for n in names:
            write_jpeg(data / folder / n)
        (data / VERI_LISTS[folder]).write_text("".join(n + "\n" for n in names))
    (data / "test_track.txt").write_text(
        "0003_c005_00030700_0.jpg 0003_c005_00030705_1.jpg\n0004_c004_00030800_0.jpg\n")
    if keypoints:
        train = "".join(veri_keypoint_line("VeRi/image_train", n, i)
                        for i, n in enumerate(VERI_FILES["image_train"]))
        test = "".join(veri_keypoint_line("VeRi/image_test", n, 10 + i)
                       for i, n in enumerate(VERI_FILES["image_test"] + VERI_FILES["image_query"]))
        (data / "keypoint_train.txt").write_text(train)
        (data / "keypoint_test.txt").write_text(test)
    return data


# ------------------------------------------------------------------------------------ CUB

CUB_IMAGES = [  # (image id, relative path, class)
    (1, "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg", 1),
    (2, "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg", 1),
    (3, "100.Brown_Pelican/Brown_Pelican_0001_1.jpg", 100),
    (4, "101.White_Pelican/White_Pelican_0001_1.jpg", 101),
    (5, "101.White_Pelican/White_Pelican_0002_2.jpg", 101),
    (6, "200.Common_Yellowthroat/Common_Yellowthroat_0001_1.jpg", 200),
]
CUB_PART_NAMES = ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg",
                  "left wing", "nape", "right eye", "right leg", "right wing", "tail", "throat"]


def cub_part(img: int, part: int) -> tuple[float, float, int]:
    """Deterministic part location: invisible when (img + part) % 4 == 0."""
    if (img + part) % 4 == 0:
        return 0.0, 0.0, 0
    return float((img + part) % 8), float(part % 4), 1


def make_cub(root: Path) -> Path:
    data = root / "CUB_200_2011"
    lines_img, lines_cls, lines_split, lines_box, lines_parts = [], [], [], [], []
    for img, rel, cls in CUB_IMAGES:
        write_jpeg(data / "images" / rel)
        lines_img.append(f"{img} {rel}\n")
        lines_cls.append(f"{img} {cls}\n")
        lines_split.append(f"{img} {img % 2}\n")
        lines_box.append(f"{img} 1.0 0.0 6.0 3.0\n")
        for part in range(1, 16):
            x, y, v = cub_part(img, part)
            lines_parts.append(f"{img} {part} {x:.1f} {y:.1f} {v}\n")
    (data / "images.txt").write_text("".join(lines_img))
    (data / "image_class_labels.txt").write_text("".join(lines_cls))
    (data / "train_test_split.txt").write_text("".join(lines_split))
    (data / "bounding_boxes.txt").write_text("".join(lines_box))
    (data / "parts").mkdir()
    (data / "parts" / "parts.txt").write_text(
        "".join(f"{i} {n}\n" for i, n in enumerate(CUB_PART_NAMES, start=1)))
    (data / "parts" / "part_locs.txt").write_text("".join(lines_parts))
    return data


# ------------------------------------------------------------------------------------ Cars196

CARS_ANNOS = [  # (relative path, x1, y1, x2, y2, class, test)
    ("car_ims/000001.jpg", 1, 1, 8, 4, 1, 0),
    ("car_ims/000002.jpg", 2, 1, 7, 3, 1, 1),
    ("car_ims/000003.jpg", 1, 2, 8, 4, 98, 0),
    ("car_ims/000004.jpg", 1, 1, 5, 4, 99, 0),
    ("car_ims/000005.jpg", 3, 1, 8, 4, 196, 1),
]


def write_cars_mat(path: Path, annos) -> None:
    """cars_annos.mat laid out like the real one: a 1 x N struct array of scalar fields."""
    from scipy.io import savemat

    dtype = [("relative_im_path", "O"), ("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"),
             ("bbox_y2", "O"), ("class", "O"), ("test", "O")]
    arr = np.zeros((1, len(annos)), dtype=dtype)
    for i, (rel, x1, y1, x2, y2, cls, test) in enumerate(annos):
        arr[0, i] = (rel, np.array([[x1]], np.uint8), np.array([[y1]], np.uint8),
                     np.array([[x2]], np.uint16), np.array([[y2]], np.uint16),
                     np.array([[cls]], np.uint8), np.array([[test]], np.uint8))
    names = np.array([["AM General Hummer SUV 2000"]], dtype=object)
    savemat(str(path), {"annotations": arr, "class_names": names})


def make_cars(root: Path) -> Path:
    data = root / "cars"
    for rel, *_ in CARS_ANNOS:
        write_jpeg(data / rel)
    write_cars_mat(data / "cars_annos.mat", CARS_ANNOS)
    return data


# ------------------------------------------------------------------------------------ folder

def make_folder(root: Path, ids: dict[str, list[str]]) -> Path:
    for ident, names in ids.items():
        for n in names:
            write_jpeg(root / ident / n)
    return root
