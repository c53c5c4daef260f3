"""Identities: which body part carries which colour and texture, plus accessories."""

from __future__ import annotations

import json
from typing import Optional

import numpy as np

from keyreid.data.synthetic.config import PALETTE, PARTS, SIDES, TEXTURED_PARTS, TEXTURES, SynthConfig


def sample_attributes(rng: np.random.Generator, cfg: SynthConfig) -> dict:
    """One person's appearance: per part colour/texture/second colour, plus accessories.

    Primary colours are a random injection of the parts into the palette, so each person uses
    distinct colours and all colours are equally frequent on every part.
    """
    perm = rng.permutation(len(PALETTE))
    parts = {}
    for k, part in enumerate(PARTS):
        colour = int(perm[k])
        texture = "solid"
        if part in TEXTURED_PARTS:
            texture = TEXTURES[int(rng.choice(len(TEXTURES), p=cfg.texture_probs))]
        colour2 = None
        if texture != "solid":
            colour2 = int(rng.choice([c for c in range(len(PALETTE)) if c != colour]))
        parts[part] = {"colour": colour, "texture": texture, "colour2": colour2}
    acc = {"hat": None, "bag": None, "band": None}
    if rng.random() < cfg.hat_prob:
        acc["hat"] = {"colour": int(rng.integers(len(PALETTE)))}
    if rng.random() < cfg.bag_prob:  # worn at one hip
        acc["bag"] = {"side": SIDES[int(rng.integers(2))], "colour": int(rng.integers(len(PALETTE)))}
    if rng.random() < cfg.band_prob:  # worn at one wrist
        acc["band"] = {"side": SIDES[int(rng.integers(2))], "colour": int(rng.integers(len(PALETTE)))}
    return {"parts": parts, "accessories": acc}


def signature(attrs: dict) -> str:
    """A canonical string of the attributes: two people with the same one look the same."""
    return json.dumps(attrs, sort_keys=True)


def attribute_vector(attrs: Optional[dict]) -> np.ndarray:
    """One-hot encoding of true attributes (the oracle embedding); zeros for no person.

    Per part: colour (P), texture (4), second colour (P, zero when solid); per accessory: colour
    (P) and, for bag and band, side (2).
    """
    P = len(PALETTE)
    chunks = []
    for part in PARTS:
        a = None if attrs is None else attrs["parts"][part]
        c, t, c2 = np.zeros(P), np.zeros(len(TEXTURES)), np.zeros(P)
        if a is not None:
            c[a["colour"]] = 1
            t[TEXTURES.index(a["texture"])] = 1
            if a["colour2"] is not None:
                c2[a["colour2"]] = 1
        chunks += [c, t, c2]
    for name in ("hat", "bag", "band"):
        a = None if attrs is None else attrs["accessories"][name]
        c, s = np.zeros(P), np.zeros(2)
        if a is not None:
            c[a["colour"]] = 1
            if "side" in a:
                s[SIDES.index(a["side"])] = 1
        chunks += [c] if name == "hat" else [c, s]
    return np.concatenate(chunks).astype(np.float32)
