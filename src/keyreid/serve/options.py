"""Search options from the query string or form fields, validated with the field named, so a
client is told exactly which option is wrong (HTTP 422)."""

from __future__ import annotations

import math
from typing import Mapping, Optional

from keyreid.errors import KeyreidError
from keyreid.search.index import INT64_MAX, parse_camera
from keyreid.serve.service import SearchOptions

FIELDS = ("top_k", "cameras", "exclude_cameras", "after", "before", "rerank")


class OptionError(KeyreidError):
    def __init__(self, field: str, problem: str):
        self.field = field
        super().__init__(f"{field}: {problem}")


def _int(field: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise OptionError(field, f"must be a whole number, got {text!r}") from None


def _cameras(field: str, text: str) -> Optional[set[int]]:
    """Cameras as the file names write them, 2 or c2 (README "Cameras")."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if not parts:
        return None
    try:
        cams = {parse_camera(p) for p in parts}
    except ValueError:
        raise OptionError(field, f"cameras are numbers as the file names write them (2 or c2), got {text!r}") from None
    if any(c < 0 for c in cams):
        raise OptionError(field, "camera ids are non-negative")
    if any(c > INT64_MAX for c in cams):
        raise OptionError(field, f"camera ids are 64-bit integers, at most {INT64_MAX}; got {max(cams)}")
    return cams


def _time(field: str, text: str) -> Optional[float]:
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise OptionError(field, f"must be a timestamp (seconds, a number), got {text!r}") from None
    if not math.isfinite(value):
        raise OptionError(field, "must be a finite number")
    return value


def _bool(field: str, text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("", "0", "false", "no", "off"):
        return False
    raise OptionError(field, f"must be true or false, got {text!r}")


def parse_options(values: Mapping[str, str], max_top_k: int, allow_unknown: bool = False) -> SearchOptions:
    """SearchOptions from string values; unknown fields are refused (a typo is not ignored)."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown and not allow_unknown:
        raise OptionError(unknown[0], f"unknown option; known: {', '.join(FIELDS)}")
    opts = SearchOptions()
    if "top_k" in values:
        opts.top_k = _int("top_k", values["top_k"])
    if not 1 <= opts.top_k <= max_top_k:
        raise OptionError("top_k", f"must lie between 1 and {max_top_k}, got {opts.top_k}")
    if "cameras" in values:
        opts.cameras = _cameras("cameras", values["cameras"])
    if "exclude_cameras" in values:
        opts.exclude_cameras = _cameras("exclude_cameras", values["exclude_cameras"])
    if "after" in values:
        opts.after = _time("after", values["after"])
    if "before" in values:
        opts.before = _time("before", values["before"])
    if opts.after is not None and opts.before is not None and opts.before < opts.after:
        raise OptionError("before", f"must not be earlier than after ({opts.before} < {opts.after})")
    if "rerank" in values:
        opts.rerank = _bool("rerank", values["rerank"])
    return opts


__all__ = ["FIELDS", "OptionError", "parse_options"]
