"""Heads, one module each, built by name: bnneck, kae, aacn, pabr, stripes."""

from __future__ import annotations

import inspect

import torch.nn as nn

from keyreid.errors import KeyreidError

from keyreid.utils.registry import Registry

HEADS = Registry("head", builtin=[f"keyreid.models.heads.{m}" for m in ("bnneck", "kae", "aacn", "pabr",
                                                                         "stripes")])
register_head = HEADS.register


def build_head(name: str, **kwargs) -> nn.Module:
    """build_head(name, in_channels=C, num_classes=N, skeleton=Skeleton|None, **head_options)."""
    cls = HEADS.get(name)
    allowed = set(inspect.signature(cls).parameters)
    unknown = set(kwargs) - allowed
    if unknown:
        options = sorted(allowed - {"in_channels", "num_classes", "skeleton", "last_stage"})
        raise KeyreidError(f"model.head_options: {sorted(unknown)} not understood by head {name!r}; "
                           f"its options: {options}")
    _check_option_types(name, cls, kwargs)
    return cls(**kwargs)


# what a head option's annotation accepts from YAML ("Optional[X]" also takes null); options with
# other annotations are the head's own to check
_TYPES = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}
_TYPE_WORDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}


def _check_option_types(name: str, cls, options: dict) -> None:
    """A head option of the wrong type is an error naming it ("max_normalize: maybe" would
    otherwise be truthy and silently read as true)."""
    params = inspect.signature(cls).parameters
    for key, value in options.items():
        annotation = params[key].annotation
        if not isinstance(annotation, str):
            continue
        optional = annotation.startswith("Optional[") and annotation.endswith("]")
        base = annotation[len("Optional["):-1] if optional else annotation
        if base not in _TYPES or (optional and value is None):
            continue
        ok = isinstance(value, _TYPES[base]) and (base == "bool" or not isinstance(value, bool))
        if not ok:
            expected = _TYPE_WORDS[base] + (" (or null)" if optional else "")
            raise KeyreidError(f"model.head_options.{key}: {value!r} is not {expected} (head {name!r})")


def head_names() -> list[str]:
    return HEADS.names()
