"""An honest protocol: the calibration, selection and reporting image sets never share an image.

- **calibration**: the images a quantizer computes its ranges on;
- **selection**: the images any search or accuracy control decides on (the mixed-precision search);
- **reporting**: the images the reported accuracy (and the ``--max-drop`` gate) is measured on.

Two sets overlap when they hold the same file (resolved path) or the same image under another name
(sha256 of the file bytes). :func:`make_disjoint` finds the overlap and, by default, splits the shared
images deterministically between the sets that hold them (in content-hash order, so the same files
always split the same way), or refuses (``policy="error"``). A set left empty is one clear error.
Each set is reported by source, size and a short fingerprint (hash of its sorted content hashes).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import YoloportError

ROLES = ("calibration", "selection", "reporting")
OVERLAP_POLICIES = ("split", "error")


def file_sha256(path) -> str:
    """sha256 (hex) of a file's bytes; an unreadable file is a YoloportError."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise YoloportError(f"cannot read image {path}: {e.strerror or e}") from None
    return h.hexdigest()


def fingerprint(hashes: Sequence[str]) -> str:
    """A short fingerprint of a set of images: the first 12 hex digits of sha256 over its sorted content hashes."""
    return hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ImageSet:
    """One role's images: ``paths`` and their content ``hashes`` (sha256, same order), and where they came from."""

    role: str
    source: str
    paths: tuple[Path, ...]
    hashes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.hashes)

    def to_dict(self) -> dict:
        return {"role": self.role, "source": self.source, "n_images": len(self), "fingerprint": self.fingerprint}


def image_set(role: str, source: str, paths: Sequence) -> ImageSet:
    """An :class:`ImageSet` of ``paths`` (hashed now); the same content twice in one set is kept once."""
    if role not in ROLES:
        raise YoloportError(f"unknown image-set role {role!r}: one of {', '.join(ROLES)}")
    seen: dict[str, Path] = {}
    for p in sorted(Path(q) for q in paths):
        seen.setdefault(file_sha256(p), p)
    kept = sorted(seen.items(), key=lambda kv: str(kv[1]))
    return ImageSet(role, str(source), tuple(p for _, p in kept), tuple(h for h, _ in kept))


@dataclass(frozen=True)
class Overlap:
    """Images two sets share: ``same_file`` (one resolved path in both) and ``same_content`` (same bytes
    under another path); ``hashes`` the shared content hashes."""

    a: str
    b: str
    same_file: int
    same_content: int
    hashes: frozenset

    @property
    def n_shared(self) -> int:
        return len(self.hashes)


def find_overlap(a: ImageSet, b: ImageSet) -> Overlap:
    """The images ``a`` and ``b`` share, by resolved path and by content."""
    shared = set(a.hashes) & set(b.hashes)
    a_path = {h: p.resolve() for h, p in zip(a.hashes, a.paths)}
    b_path = {h: p.resolve() for h, p in zip(b.hashes, b.paths)}
    same_file = sum(1 for h in shared if a_path[h] == b_path[h])
    return Overlap(a.role, b.role, same_file, len(shared) - same_file, frozenset(shared))


def _owner(shared_by: dict[str, list[int]]) -> dict[str, int]:
    """Shared content hash -> index of the set that keeps it: the shared images of each group of sets,
    in content-hash order, dealt round-robin to the sets of the group (deterministic, balanced)."""
    groups: dict[tuple, list[str]] = {}
    for h, idx in shared_by.items():
        groups.setdefault(tuple(idx), []).append(h)
    owner = {}
    for idx, hashes in groups.items():
        for k, h in enumerate(sorted(hashes)):
            owner[h] = idx[k % len(idx)]
    return owner


def describe_overlap(ov: Overlap) -> str:
    kinds = [f"{ov.same_file} same file(s)"] if ov.same_file else []
    if ov.same_content:
        kinds.append(f"{ov.same_content} same image(s) under another name")
    return f"the {ov.a} and {ov.b} sets share {ov.n_shared} image(s) ({', '.join(kinds)})"


def make_disjoint(sets: list[ImageSet], policy: str = "split", warn: Callable[[str], None] | None = None) -> tuple[list[ImageSet], list[dict]]:
    """Sets that share no image. Returns ``(disjoint sets in the same order, overlaps found)``.

    ``policy="split"``: each shared image goes to exactly one of the sets holding it (content-hash
    order, round-robin), with one warning line through ``warn`` per overlapping pair; ``"error"``:
    a YoloportError naming the overlap. A set left empty is a YoloportError.
    """
    if policy not in OVERLAP_POLICIES:
        raise YoloportError(f"--overlap must be one of {', '.join(OVERLAP_POLICIES)}, got {policy!r}")
    overlaps = [find_overlap(a, b) for i, a in enumerate(sets) for b in sets[i + 1:]]
    overlaps = [o for o in overlaps if o.n_shared]
    if not overlaps:
        return list(sets), []
    if policy == "error":
        raise YoloportError("; ".join(describe_overlap(o) for o in overlaps)
                            + ": give disjoint image sets, or --overlap split to split them by content hash")
    shared_by: dict[str, list[int]] = {}
    for i, s in enumerate(sets):
        for h in s.hashes:
            shared_by.setdefault(h, []).append(i)
    owner = _owner({h: idx for h, idx in shared_by.items() if len(idx) > 1})
    out = []
    for i, s in enumerate(sets):
        keep = [k for k, h in enumerate(s.hashes) if owner.get(h, i) == i]
        out.append(ImageSet(s.role, s.source, tuple(s.paths[k] for k in keep), tuple(s.hashes[k] for k in keep)))
    for o in overlaps:
        sizes = ", ".join(f"{s.role} {len(s)}" for s in out)
        (warn or (lambda m: None))(f"{describe_overlap(o)}: split them by content hash ({sizes} images now); "
                                  "--overlap error refuses instead")
    empty = [s for s in out if not len(s)]
    if empty:
        raise YoloportError(f"the {empty[0].role} set ({empty[0].source}) is empty once the images it shares with the "
                            "other sets are removed: give it images of its own")
    return out, [{"sets": [o.a, o.b], "shared": o.n_shared, "same_file": o.same_file,
                  "same_content": o.same_content} for o in overlaps]


def protocol_record(sets: list[ImageSet], overlaps: list[dict], policy: str, not_used: dict | None = None) -> dict:
    """What a report, sidecar or JSON states about the protocol: each role's source, size and
    fingerprint (``None`` plus a reason for a role the command does not use), the overlaps found
    and what was done about them."""
    rec = {s.role: s.to_dict() for s in sets}
    for role, why in (not_used or {}).items():
        rec[role] = {"role": role, "source": None, "n_images": 0, "fingerprint": None, "note": why}
    rec["overlap"] = {"policy": policy, "found": overlaps}
    return rec


def used_calibration(calib, pool_record: dict) -> dict:
    """The record of the calibration images a quantizer actually used (``calib``: a CalibrationSet drawn
    from the disjoint pool ``pool_record`` describes), with the pool's size."""
    used = image_set("calibration", calib.source, calib.paths).to_dict()
    return {**used, "pool_images": pool_record["n_images"], "pool_fingerprint": pool_record["fingerprint"]}


def calibration_only_protocol(calib, selection_note: str) -> dict:
    """The protocol record of a command that only calibrates (``calib``: a CalibrationSet): the
    calibration images used; no selection (``selection_note`` says why) and no reporting set."""
    cal = image_set("calibration", calib.source, calib.paths)
    return protocol_record([cal], [], "split", not_used={
        "selection": selection_note, "reporting": "no accuracy reported here: measure it with val on other images"})


def labelled_split(source: str, default_split: str = "val"):
    """``data.yaml`` or ``data.yaml:split`` -> ``(DataConfig, split, images)``; anything else is a YoloportError."""
    from .dataset import list_images, load_data_yaml

    src, split = str(source), default_split
    if ":" in src and not src.lower().endswith((".yaml", ".yml")):
        src, split = src.rsplit(":", 1)
    if not src.lower().endswith((".yaml", ".yml")):
        raise YoloportError(f"{source}: a labelled image set must be a data YAML[:split]")
    cfg = load_data_yaml(src)
    return cfg, split, list_images(cfg.split(split))


def write_image_set_yaml(out_dir, name: str, cfg, paths: Sequence) -> Path:
    """A data YAML ``out_dir/<name>.yaml`` whose ``val`` split is exactly ``paths`` (listed in
    ``<name>.txt``, absolute), with ``cfg``'s class names: how a disjoint set is handed to code that
    reads a data YAML. Returns the YAML path."""
    import yaml

    from ..io.paths import write_text_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lst = write_text_atomic(out_dir / f"{name}.txt", "".join(f"{Path(p).resolve()}\n" for p in paths))
    doc = {"path": str(out_dir.resolve()), "val": lst.name, "nc": len(cfg.names), "names": list(cfg.names)}
    return write_text_atomic(out_dir / f"{name}.yaml", yaml.safe_dump(doc, sort_keys=False))


__all__ = ["OVERLAP_POLICIES", "ROLES", "ImageSet", "Overlap", "calibration_only_protocol", "describe_overlap", "file_sha256", "find_overlap",
           "fingerprint", "image_set", "labelled_split", "make_disjoint", "protocol_record", "used_calibration",
           "write_image_set_yaml"]
