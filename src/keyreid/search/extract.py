"""Turn a folder of images (or a dataset split) into a features folder, resumably and in shards.

The image list is fixed before any work (sorted paths, or the adapter's order) and its sha256
goes into the manifest, so a rerun continues only the very same list. Sharding splits the list
into N contiguous blocks: shard i of N is block i, and reading the shards in order gives the
list's order.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from keyreid.data.datasets.base import IMAGE_EXTENSIONS
from keyreid.data.loader import read_image
from keyreid.data.records import named_camera
from keyreid.errors import ImageTooLarge
from keyreid.errors import DataError, KeyreidError
from keyreid.search.features import FeatureWriter, check_shard_set, shard_dir

SPLIT_CHOICES = ("gallery", "query", "train", "all")


@dataclass
class ImageItem:
    """One image to embed; `camid` is its camera as the file name writes it (README "Cameras"),
    from --pattern's (?P<cam>..) group or the dataset adapter's Sample.camera."""

    path: str
    pid: Optional[int] = None
    camid: Optional[int] = None
    timestamp: Optional[float] = None
    track: Optional[int] = None

    def row(self) -> dict:
        return {"path": self.path, "pid": self.pid, "camid": self.camid, "timestamp": self.timestamp,
                "track": self.track}


def _compile_pattern(pattern: Optional[str]) -> Optional[re.Pattern]:
    if pattern is None:
        return None
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise KeyreidError(f"--pattern {pattern!r} is not a regular expression ({e})") from None
    allowed = {"pid", "cam", "t", "track"}
    if not set(regex.groupindex) & allowed or set(regex.groupindex) - allowed:
        raise KeyreidError(f"--pattern {pattern!r} needs named groups among (?P<pid>..), (?P<cam>..), "
                           f"(?P<t>..), (?P<track>..); it has {sorted(regex.groupindex)}")
    return regex


def parse_name(regex: Optional[re.Pattern], name: str) -> dict:
    """pid / camid / timestamp / track from a file name (None where the pattern gives none); camid
    is the number the (?P<cam>..) group matched, as the file writes it (README "Cameras")."""
    out = {"pid": None, "camid": None, "timestamp": None, "track": None}
    m = regex.search(name) if regex is not None else None
    if m is None:
        return out
    groups = m.groupdict()
    for group, key, cast in (("pid", "pid", int), ("cam", "camid", int), ("t", "timestamp", float),
                             ("track", "track", int)):
        if groups.get(group) is not None:
            try:
                out[key] = cast(groups[group])
            except ValueError:
                raise DataError(name, f"--pattern group {group!r} matched {groups[group]!r}, "
                                      f"not a number") from None
    return out


def list_folder(folder: Path, pattern: Optional[str] = None) -> tuple[list[ImageItem], dict]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "image folder does not exist or is not a folder")
    regex = _compile_pattern(pattern)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(folder, f"no images found (looked for {', '.join(IMAGE_EXTENSIONS)} files)")
    items = [ImageItem(str(p.resolve()), **parse_name(regex, p.name)) for p in files]
    return items, {"kind": "folder", "root": str(folder.resolve()), "pattern": pattern}


def _camera(sample) -> Optional[int]:
    camera = named_camera(sample)   # not the protocol's 0-based camid (README "Cameras")
    return None if camera is None else int(camera)


def list_dataset(name: str, root: Path, split: str = "gallery") -> tuple[list[ImageItem], dict]:
    from keyreid.data.datasets import build_dataset

    if split not in SPLIT_CHOICES:
        raise KeyreidError(f"--split must be one of {SPLIT_CHOICES}, got {split!r}")
    try:
        ds = build_dataset(name, root)
    except KeyError as e:
        raise KeyreidError(f"--dataset: {e.args[0]}") from None
    splits = ("gallery", "query", "train") if split == "all" else (split,)
    items = [ImageItem(str(Path(s.path).resolve()), int(s.pid), _camera(s), s.meta.get("timestamp"),
                       s.meta.get("track"))
             for sp in splits for s in getattr(ds, sp)]
    if not items:
        raise DataError(root, f"dataset {name!r} has no {split} images")
    return items, {"kind": "dataset", "dataset": name, "root": str(Path(root).resolve()), "split": split}


def resolve_shard(shard: Optional[str]) -> Optional[tuple[int, int]]:
    """`--shard i/N`, or RANK / WORLD_SIZE under torchrun; None for a single run."""
    if shard is not None:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
        if m is None or not 0 <= int(m.group(1)) < int(m.group(2)):
            raise KeyreidError(f"--shard {shard!r}: expected i/N with 0 <= i < N, e.g. 0/4")
        return int(m.group(1)), int(m.group(2))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return int(os.environ.get("RANK", "0")), world
    return None


def shard_block(n: int, index: int, count: int) -> tuple[int, int]:
    return index * n // count, (index + 1) * n // count


def extract(model, items: list[ImageItem], source: dict, out: Path, *, batch_size: int = 64,
            flip: bool = False, dtype: str = "float32", on_error: str = "stop",
            shard: Optional[tuple[int, int]] = None, checkpoint: Optional[str] = None,
            progress: Optional[Callable[[int, int], None]] = None) -> FeatureWriter:
    """Embed `items` into the features folder `out` (its shard folder when sharded).

    `model` has the LoadedModel embedding interface (.preprocess, .embed_tensor, .fingerprint,
    .dim, .normalized, .distance, .card). Returns the finished writer."""
    if on_error not in ("stop", "skip"):
        raise KeyreidError(f"--on-error must be stop or skip, got {on_error!r}")
    if batch_size < 1:
        raise KeyreidError("--batch-size must be at least 1")
    digest = hashlib.sha256("\n".join(i.path for i in items).encode()).hexdigest()[:16]
    source = dict(source, images=len(items), list_sha256=digest)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise KeyreidError(f"{folder}: is a file, not a features folder; give -o a new or existing folder "
                           "(the file is left as it is)")
    if shard is not None:
        check_shard_set(folder, *shard)
        lo, hi = shard_block(len(items), *shard)
        items = items[lo:hi]
        folder = shard_dir(out, *shard)
    writer = FeatureWriter(folder, fingerprint=model.fingerprint, dim=model.dim, total=len(items),
                           dtype=dtype, normalized=model.normalized, distance=model.distance, flip=flip,
                           shard=list(shard) if shard else None, source=source,
                           model={k: v for k, v in model.card.items()}, checkpoint=checkpoint)
    if progress:
        progress(writer.done, len(items))
    # batches start at multiples of batch_size (see features.py: byte-identical resume); a
    # rerun with another --batch-size first tops the current batch up to the next multiple
    bounds = list(range(writer.done - writer.done % batch_size + batch_size, len(items), batch_size))
    bounds = [writer.done] + bounds if writer.done < len(items) else []
    for lo, hi in zip(bounds, bounds[1:] + [len(items)]):
        batch = items[lo:hi]
        images, rows, skipped = [], [], []
        for item in batch:
            try:
                images.append(read_image(item.path))
            except ImageTooLarge:
                raise  # never skipped: decoding it could exhaust memory, and the user must know
            except DataError as e:
                if on_error == "stop":
                    raise DataError(item.path, f"{e.problem} (use --on-error skip to skip such images)") from None
                skipped.append((item.path, e.problem))
                continue
            rows.append(item.row())
        vectors = (model.embed_tensor(model.preprocess(images), flip) if images
                   else np.zeros((0, model.dim), np.float32))
        writer.commit(np.asarray(vectors, np.float32), rows, len(batch), skipped)
        if progress:
            progress(writer.done, len(items))
    if not writer.complete and not items:
        writer.commit(np.zeros((0, model.dim), np.float32), [], 0)
    return writer


__all__ = ["ImageItem", "SPLIT_CHOICES", "extract", "list_dataset", "list_folder", "parse_name",
           "resolve_shard", "shard_block"]
