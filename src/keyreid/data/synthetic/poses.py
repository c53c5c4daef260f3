"""3D body model and random poses.

Body frame: X = the person's left, Y = up, Z = forward (out of the chest); pelvis at the origin,
standing height about 1.
"""

from __future__ import annotations

import math

import numpy as np

from keyreid.data.synthetic.config import SIDES

HIP_X, SHOULDER_X, SHOULDER_Y, NECK_Y = 0.09, 0.125, 0.30, 0.335
UPPER_ARM, FOREARM, THIGH, SHIN = 0.165, 0.145, 0.235, 0.235
HEAD_R = 0.062
# capsule radii (start, end)
R_THIGH, R_SHIN, R_UPPER, R_FORE = (0.056, 0.045), (0.043, 0.033), (0.037, 0.031), (0.031, 0.026)


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _limb_dir(flex: float, abd: float, side: float) -> np.ndarray:
    """Unit direction of a limb hanging down, swung forward by flex and outward by abd."""
    return np.array([side * math.sin(abd), -math.cos(abd) * math.cos(flex),
                     math.cos(abd) * math.sin(flex)])


def _bend(d: np.ndarray, angle: float, toward: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Rotate unit vector d by angle toward the part of `toward` perpendicular to d."""
    t = toward - (toward @ d) * d
    n = np.linalg.norm(t)
    if n < 1e-6:
        t = fallback - (fallback @ d) * d
        n = np.linalg.norm(t)
    t = t / n
    return math.cos(angle) * d + math.sin(angle) * t


def sample_pose(rng: np.random.Generator) -> dict:
    """3D joints (body frame) of a random walking, standing or gesturing pose."""
    mode = ("walk", "stand", "gesture")[int(rng.choice(3, p=[0.65, 0.2, 0.15]))]
    rad = math.radians
    amp = {"walk": rng.uniform(15, 35), "stand": rng.uniform(0, 8), "gesture": rng.uniform(0, 20)}[mode]
    s = math.sin(rng.uniform(0, 2 * math.pi))
    lean = rad(rng.uniform(-3, 12) if mode == "walk" else rng.uniform(-4, 6))
    twist = rad(-0.3 * amp * s + rng.normal(0, 4))
    r_torso = rot_y(twist) @ rot_x(lean)
    j = {}
    neck = r_torso @ np.array([0, NECK_Y, 0])
    r_head = r_torso @ rot_y(rad(rng.normal(0, 20))) @ rot_x(rad(rng.normal(0, 8)))
    head = neck + r_torso @ np.array([0, 0.085, 0.01])
    j["neck"], j["head"], j["r_head"], j["r_torso"] = neck, head, r_head, r_torso
    j["nose"] = head + r_head @ np.array([0, -0.012, 0.068])
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        j[f"{side}_eye"] = head + r_head @ np.array([sgn * 0.024, 0.012, 0.055])
        j[f"{side}_ear"] = head + r_head @ np.array([sgn * 0.062, 0.0, -0.005])
    gait = {"left": amp * s, "right": -amp * s}
    forward, up, back = np.array([0, 0.3, 1.0]), np.array([0, 1.0, 0]), np.array([0, 0, -1.0])
    gesture_side = SIDES[int(rng.integers(2))]
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        hip = np.array([sgn * HIP_X, 0, 0])
        hflex = gait[side] + rng.normal(0, 5)
        thigh = _limb_dir(rad(hflex), rad(rng.uniform(0, 10)), sgn)
        knee_bend = rad(max(0.0, rng.uniform(0, 12) + 1.2 * max(0.0, -hflex) + rng.normal(0, 5)))
        shin = _bend(thigh, knee_bend, back, back)
        knee = hip + THIGH * thigh
        ankle = knee + SHIN * shin
        phi = math.atan2(shin[2], -shin[1])  # the foot pitches with the shin
        foot = np.array([0, math.sin(phi), math.cos(phi)])
        j[f"{side}_hip"], j[f"{side}_knee"], j[f"{side}_ankle"], j[f"{side}_foot"] = hip, knee, ankle, foot
        # arms swing against the legs of the same side
        if mode == "gesture" and side == gesture_side:
            sflex, sabd, elbow = rng.uniform(30, 150), rng.uniform(0, 80), rng.uniform(0, 130)
        else:
            sflex = -0.9 * gait[side] + rng.normal(0, 8)
            sabd = rng.uniform(4, 20)
            elbow = rng.uniform(5, 40) + 0.5 * max(0.0, sflex)
        shoulder = r_torso @ np.array([sgn * SHOULDER_X, SHOULDER_Y, 0])
        upper = r_torso @ _limb_dir(rad(sflex), rad(sabd), sgn)
        fore = _bend(upper, rad(elbow), r_torso @ forward, r_torso @ up)
        elbow_p = shoulder + UPPER_ARM * upper
        j[f"{side}_shoulder"], j[f"{side}_elbow"] = shoulder, elbow_p
        j[f"{side}_wrist"] = elbow_p + FOREARM * fore
    j["mode"] = mode
    return j
