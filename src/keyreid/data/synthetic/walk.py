"""A deterministic walk cycle: the 3D body (poses.py's model) as a function of gait phase.

The phase advances with the distance walked (video world), so feet do not slide; one cycle is two
steps. Every person has a few gait parameters of their own (stride swing, arm swing, lean).
"""

from __future__ import annotations

import math

import numpy as np

from keyreid.data.synthetic.poses import (FOREARM, HIP_X, NECK_Y, SHIN, SHOULDER_X, SHOULDER_Y, THIGH, UPPER_ARM,
                                          _bend, _limb_dir, rot_x, rot_y)

FOOT_DROP = 0.045  # shoe sole below the ankle joint (body units): drawing.py's shoe capsule


def sample_gait(rng: np.random.Generator) -> dict:
    """One person's gait parameters (degrees; stride in body heights per cycle)."""
    return {
        "amp": round(float(rng.uniform(18, 30)), 3),  # thigh swing
        "knee": round(float(rng.uniform(30, 50)), 3),  # knee flexion at mid-swing
        "arm": round(float(rng.uniform(0.6, 1.1)), 3),  # arm swing against the legs
        "elbow": round(float(rng.uniform(8, 30)), 3),
        "lean": round(float(rng.uniform(0, 8)), 3),
        "stride": round(float(rng.uniform(0.75, 0.9)), 3),  # distance per cycle / body height
    }


def walk_pose(phase: float, params: dict) -> dict:
    """3D joints (body frame, pelvis at the origin) at gait phase `phase` (radians): the same
    keys as poses.sample_pose, so drawing.draw_person and project_keypoints take it."""
    rad = math.radians
    amp, s = params["amp"], math.sin(phase)
    r_torso = rot_y(rad(-0.3 * amp * s)) @ rot_x(rad(params["lean"]))  # shoulders counter-rotate
    neck = r_torso @ np.array([0, NECK_Y, 0])
    head = neck + r_torso @ np.array([0, 0.085, 0.01])
    r_head = rot_x(rad(0.5 * params["lean"]))  # eyes stay on the walking direction
    j = {"neck": neck, "head": head, "r_head": r_head, "r_torso": r_torso,
         "nose": head + r_head @ np.array([0, -0.012, 0.068])}
    forward, up, back = np.array([0, 0.3, 1.0]), np.array([0, 1.0, 0]), np.array([0, 0, -1.0])
    for side, sgn, ph in (("left", 1.0, phase), ("right", -1.0, phase + math.pi)):
        j[f"{side}_eye"] = head + r_head @ np.array([sgn * 0.024, 0.012, 0.055])
        j[f"{side}_ear"] = head + r_head @ np.array([sgn * 0.062, 0.0, -0.005])
        hflex = amp * math.sin(ph)
        hip = np.array([sgn * HIP_X, 0, 0])
        thigh = _limb_dir(rad(hflex), rad(3.0), sgn)
        # the knee bends while the leg swings forward (hip flexion rising), nearly straight in stance
        knee_bend = rad(4.0 + params["knee"] * max(0.0, math.cos(ph)) ** 1.5)
        shin = _bend(thigh, knee_bend, back, back)
        knee = hip + THIGH * thigh
        ankle = knee + SHIN * shin
        pitch = math.atan2(shin[2], -shin[1])
        j[f"{side}_hip"], j[f"{side}_knee"], j[f"{side}_ankle"] = hip, knee, ankle
        j[f"{side}_foot"] = np.array([0, math.sin(pitch), math.cos(pitch)])
        sflex = -params["arm"] * hflex
        shoulder = r_torso @ np.array([sgn * SHOULDER_X, SHOULDER_Y, 0])
        upper = r_torso @ _limb_dir(rad(sflex), rad(8.0), sgn)
        fore = _bend(upper, rad(params["elbow"] + 0.5 * max(0.0, sflex)), r_torso @ forward, r_torso @ up)
        elbow = shoulder + UPPER_ARM * upper
        j[f"{side}_shoulder"], j[f"{side}_elbow"], j[f"{side}_wrist"] = shoulder, elbow, elbow + FOREARM * fore
    j["mode"] = "walk"
    return j


def pelvis_lift(pose: dict) -> float:
    """Pelvis height above the ground (body units): the lower sole touches the ground."""
    return float(FOOT_DROP - min(pose["left_ankle"][1], pose["right_ankle"][1]))
