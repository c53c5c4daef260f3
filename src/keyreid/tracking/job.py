"""`keyreid track`'s output folder: one MOT result file per sequence and a manifest.

    OUT/track.json        settings (tracker, model fingerprint, options) and, per finished
                          sequence, its frames, frames per second and skipped-box counts
    OUT/<seq>.txt         MOTChallenge results (TrackEval's tracker layout)
    OUT/.track.lock       held while a `keyreid track` writes here

Each result file is written atomically and only then listed in the manifest (also written
atomically), so a killed run leaves finished sequences listed and complete and no half file;
running the same command again skips them. Other settings in an existing folder are refused in
one line (the results would mix two trackers) unless `--overwrite`, which replaces only the
files the manifest lists (with the same settings it continues, like a plain rerun). A folder holding other files and no manifest is not ours: refused.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from keyreid.errors import DataError
from keyreid.utils.io import atomic_write_text, file_lock

MANIFEST = "track.json"
FORMAT = "keyreid-tracks"
LOCK = ".track.lock"


class TrackOutput:
    def __init__(self, root: Path, settings: dict, overwrite: bool = False):
        self.root = Path(root)
        self.settings = settings
        self.done: dict = {}
        manifest = self.root / MANIFEST
        if manifest.is_file():
            try:
                old = json.loads(manifest.read_text(encoding="utf-8"))
                if old.get("format") != FORMAT:
                    raise ValueError("not a keyreid tracking manifest")
            except (ValueError, AttributeError) as e:
                raise DataError(manifest, f"unreadable ({e}); move it away or choose another --output") from None
            before = old.get("settings", {})
            if before != settings:
                if not overwrite:
                    changed = sorted(k for k in set(settings) | set(before) if settings.get(k) != before.get(k))
                    raise DataError(self.root, f"holds tracks made with other settings ({', '.join(changed)}); "
                                               "choose another --output, or --overwrite to replace them")
                for name in old.get("sequences", {}):  # only what the manifest says we wrote
                    (self.root / f"{name}.txt").unlink(missing_ok=True)
                    (self.root / "global" / f"{name}.txt").unlink(missing_ok=True)
                (self.root / "identities.csv").unlink(missing_ok=True)
            else:
                self.done = {name: entry for name, entry in old.get("sequences", {}).items()
                             if (self.root / f"{name}.txt").is_file()}
        elif self.root.is_dir() and any(p.name != LOCK for p in self.root.iterdir()):
            raise DataError(self.root, f"exists and holds files but no {MANIFEST}: not a keyreid tracking "
                                       "output; choose an empty or new --output")

    def result_path(self, name: str) -> Path:
        return self.root / f"{name}.txt"

    def finished(self, name: str, entry: dict) -> None:
        """Record a sequence whose result file is already written."""
        self.done[name] = entry
        self._save()

    def _save(self) -> None:
        atomic_write_text(self.root / MANIFEST, json.dumps(
            {"format": FORMAT, "version": 1, "settings": self.settings, "sequences": self.done}, indent=1) + "\n")


@contextmanager
def locked_output(root: Path, wait_s: float = 0.0) -> Iterator[None]:
    """Hold OUT/.track.lock: a second `keyreid track` into the same folder fails in one line."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / LOCK, wait_s, f"{root}: another keyreid track is writing here; wait for it "
                                        "or choose another --output"):
        yield


def settings_of(tracker: str, model: Optional[object], static_camera: bool, options: dict) -> dict:
    """What decides a result file: a rerun with the same settings continues, others are refused."""
    return {"tracker": tracker, "model": None if model is None else model.fingerprint,
            "static_camera": static_camera, "options": dict(sorted(options.items()))}
