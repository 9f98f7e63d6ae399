"""Cosmos action-conditioned convention: end-effector pose dims, gripper, and the actions between frames.

Facts from cosmos-predict2 ``data/action_conditioned/action_conditioned_dataset.py`` (adapted from
IRASim): an annotation's ``state`` holds the end-effector pose first (xyz, then roll/pitch/yaw with
``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``), ``continuous_gripper_state`` the gripper. Between frames
k-1 and k of a clip the action is ``[R_{k-1}^T (p_k - p_{k-1}), euler(R_{k-1}^T R_k), gripper_k]``
(``accumulate_action=False``), scaled by ``[20]*6 + [1]``. The Euler extraction is the same formula
as Cosmos' ``rotm2euler`` (``sy < 1e-6`` singular branch, angles in (-pi, pi]), vectorized.

Which state dims are the pose is read from names (``ee_x``/``eef_pos_0``.., ``roll``/``ee_rot_0``..)
or given; joint-space data has none and is refused by the callers.
"""

from __future__ import annotations

import re

import numpy as np

SCALE = np.array([20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 1.0])
GRIPPER_EXTRA = "continuous_gripper_state"
CLIP_FRAMES = 13  # Cosmos' bridge config: num_frames 13 (1 conditioning + 12 predicted), sequence_interval 1
EULER_ROTATIONS = ("", "euler_xyz")  # rotation types whose 3 rotation dims are Cosmos' roll/pitch/yaw

_SEP = r"[._\-/ ]?"
_EE = re.compile(r"(ee|eef|end_?effector|tcp|tool|cartesian|cart)")
_POSITION_WORD = re.compile(r"(pos|position|xyz|translation|trans)$")
_ROTATION_WORD = re.compile(r"rot|rotation|euler|rpy|orientation|ori|angle|angles")
_AXIS = re.compile(rf"^(?P<stem>.*?){_SEP}(?P<axis>x|y|z|0|1|2|roll|pitch|yaw|rx|ry|rz)$")


def euler_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """[..., 3] roll/pitch/yaw -> [..., 3, 3] ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``."""
    a, b, c = rpy[..., 0], rpy[..., 1], rpy[..., 2]
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    one, zero = np.ones_like(a), np.zeros_like(a)
    rx = np.stack([one, zero, zero, zero, ca, -sa, zero, sa, ca], -1).reshape(*a.shape, 3, 3)
    ry = np.stack([cb, zero, sb, zero, one, zero, -sb, zero, cb], -1).reshape(*a.shape, 3, 3)
    rz = np.stack([cc, -sc, zero, sc, cc, zero, zero, zero, one], -1).reshape(*a.shape, 3, 3)
    return rz @ ry @ rx


def matrix_to_euler(rot: np.ndarray) -> np.ndarray:
    """[..., 3, 3] -> [..., 3] roll/pitch/yaw, Cosmos' ``rotm2euler`` (gimbal lock: yaw 0)."""
    sy = np.sqrt(rot[..., 0, 0] ** 2 + rot[..., 1, 0] ** 2)
    singular = sy < 1e-6
    x = np.where(singular, np.arctan2(-rot[..., 1, 2], rot[..., 1, 1]), np.arctan2(rot[..., 2, 1], rot[..., 2, 2]))
    y = np.arctan2(-rot[..., 2, 0], sy)
    z = np.where(singular, 0.0, np.arctan2(rot[..., 1, 0], rot[..., 0, 0]))
    angles = np.stack([x, y, z], -1)
    return np.where(angles <= -np.pi, angles + 2 * np.pi, angles)


def ee_delta_actions(pose: np.ndarray, gripper: np.ndarray) -> np.ndarray:
    """Actions between consecutive rows: pose [T, 6] (xyz + rpy), gripper [T] -> [T-1, 7], scaled as Cosmos does."""
    pose = np.asarray(pose, dtype=np.float64)
    rot = euler_to_matrix(pose[:, 3:6])
    prev_t = np.swapaxes(rot[:-1], -1, -2)
    position = np.einsum("tij,tj->ti", prev_t, pose[1:, :3] - pose[:-1, :3])
    rotation = matrix_to_euler(prev_t @ rot[1:])
    out = np.concatenate([position, rotation, np.asarray(gripper, np.float64)[1:, None]], axis=1)
    return out * SCALE


def infer_pose_dims(names: list[str]) -> list[int] | None:
    """Indices of (x, y, z, roll, pitch, yaw) of the end effector from state names, or None."""
    lowered = [n.lower() for n in names]
    groups: dict[str, dict[str, int]] = {}
    for i, name in enumerate(lowered):
        match = _AXIS.match(name)
        if match:
            groups.setdefault(match.group("stem").rstrip("._-/ "), {})[match.group("axis")] = i
    position = _triples(groups, (("x", "y", "z"), ("0", "1", "2")), _is_position)
    rotation = _triples(groups, (("roll", "pitch", "yaw"), ("rx", "ry", "rz")), lambda stem: True)
    rotation += _triples(groups, (("x", "y", "z"), ("0", "1", "2")), _is_rotation)
    if len(position) != 1 or len(rotation) != 1:
        return None
    return [*position[0], *rotation[0]]


def _is_rotation(stem: str) -> bool:
    last = re.split(r"[._\-/ ]", stem)[-1] if stem else ""
    return bool(_ROTATION_WORD.fullmatch(last)) and "quat" not in stem


def _is_position(stem: str) -> bool:
    """``x``/``ee_x``/``eef_pos_0``: a bare axis, an end-effector stem or a position word, never a rotation."""
    return not _is_rotation(stem) and (stem == "" or bool(_EE.search(stem)) or bool(_POSITION_WORD.search(stem)))


def _triples(groups: dict[str, dict[str, int]], axis_sets: tuple[tuple[str, str, str], ...], accept) -> list[list[int]]:
    return [[members[a] for a in axes] for stem, members in groups.items() if accept(stem)
            for axes in axis_sets if all(a in members for a in axes)]


def infer_gripper_dim(names: list[str], pose: list[int]) -> int | None:
    """The one state dim named like a gripper (position, not velocity), outside the pose, or None."""
    found = [i for i, n in enumerate(names) if "gripper" in n.lower() and "vel" not in n.lower() and i not in pose]
    return found[0] if len(found) == 1 else None
