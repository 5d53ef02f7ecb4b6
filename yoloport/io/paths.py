"""Output locations that never overwrite what a user already has.

The policy every command follows (``claim_run_dir``): a run writes into a *new* folder that it
creates itself (``runs/detect/exp``, ``exp2``, ... as Ultralytics does), claimed with an exclusive
``mkdir`` so two concurrent runs can never share one. An existing folder is used only when the user
says so (``exist_ok``), and even then no file that is already there is replaced unless the user
also says ``overwrite`` (``refuse_existing_outputs``). A command never writes into the folder it
reads its inputs from (``refuse_output_over_inputs``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import YoloportError


def _numbered_stem(path: Path) -> tuple[str, int]:
    stem = re.sub(r"\d+$", "", path.name) or path.name
    return stem, 2


def claim_run_dir(path, *, exist_ok: bool = False, increment: bool = True, what: str = "output folder") -> Path:
    """Create and return a run folder that this run owns.

    - ``path`` does not exist: it is created (its parents too) and returned.
    - it exists and ``exist_ok``: returned as it is (the caller then refuses to replace files in it
      that it did not create, see :func:`refuse_existing_outputs`).
    - it exists, ``increment``: the next free ``<stem>N`` is claimed instead (``exp`` -> ``exp2``).
    - it exists, no ``increment``: a YoloportError naming ``--exist-ok``.

    The claim is an exclusive ``mkdir``: of two runs racing for one name, exactly one gets it and the
    other moves on to the next number (or fails, without ``increment``).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise YoloportError(f"{what} {path} is an existing file, not a folder")
    if exist_ok and path.is_dir():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise YoloportError(f"cannot create {what} {path}: a parent of it is a file") from None
    candidate = path
    stem, n = _numbered_stem(path)
    while True:
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            if exist_ok and candidate.is_dir():
                return candidate
            if not increment:
                raise YoloportError(
                    f"{what} {path} already exists; pass --exist-ok to write into it "
                    "(existing files there are kept unless --overwrite), or choose a new folder"
                ) from None
            candidate = path.parent / f"{stem}{n}"
            n += 1
        except OSError as e:
            raise YoloportError(f"cannot create {what} {candidate}: {e.strerror or e}") from None


def claim_results_dir(project, name: str, results, exist_ok: bool = False, overwrite: bool = False) -> Path:
    """The run folder ``project/name`` of a command that writes ``results`` (file names) into it: a new
    ``name{N}`` unless ``exist_ok`` or ``overwrite``; in an existing folder, results already there are
    refused (before any work) unless ``overwrite``."""
    exist_ok = bool(exist_ok) or bool(overwrite)
    target = Path(project) / name
    if exist_ok and target.is_dir():
        refuse_existing_outputs([target / r for r in results], bool(overwrite))
    return claim_run_dir(target, exist_ok=exist_ok, increment=True, what="run folder")


def refuse_output_over_inputs(out_dir: Path, inputs, what: str = "--save-dir") -> None:
    """A YoloportError when ``out_dir`` is the folder of any input file (results written there would
    land beside, or over, the user's own files)."""
    out = Path(out_dir).resolve()
    for f in inputs:
        if Path(f).resolve().parent == out:
            raise YoloportError(
                f"{what} {out_dir} is the folder the inputs are read from ({Path(f).name} is there); "
                "results are never written beside the source images: choose another folder"
            )


def refuse_existing_outputs(paths, overwrite: bool) -> None:
    """Unless ``overwrite``, a YoloportError naming the first few of ``paths`` that already exist."""
    if overwrite:
        return
    existing = [p for p in paths if Path(p).exists()]
    if existing:
        shown = ", ".join(str(p) for p in existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise YoloportError(f"{len(existing)} output file(s) already exist: {shown}; pass --overwrite to replace them")


def unique_stems(paths) -> dict:
    """``{path: output stem}`` with a ``_2``, ``_3`` suffix where two inputs share a stem (a glob over
    several folders), so no output of this run replaces another output of the same run."""
    seen: dict[str, int] = {}
    out = {}
    for p in paths:
        stem = Path(p).stem
        k = seen.get(stem, 0) + 1
        seen[stem] = k
        out[Path(p)] = stem if k == 1 else f"{stem}_{k}"
    return out


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` via a temp file + rename, so a reader never sees half a file."""
    from .atomic import atomic_write

    return atomic_write(path, lambda f: f.write(text.encode()))


def json_output_path(json_arg, project, name, filename: str, overwrite: bool = False) -> Path:
    """Where a command writes its JSON: ``--json FILE`` when given (a folder is refused, an existing
    file too unless ``overwrite``: see :func:`claim_output_file`), else ``<project>/<name>N/<filename>``
    in a new run folder claimed for this run."""
    if json_arg:
        return claim_output_file(json_arg, overwrite, what="--json")
    return claim_run_dir(Path(project) / name, increment=True, what="run folder") / filename


def claim_output_file(path, overwrite: bool, what: str = "--out") -> Path:
    """``path`` as the destination of one output file: a folder is refused, an existing file is
    refused unless ``overwrite``, a parent that is a file is refused; missing parents are created.
    The file itself is then written atomically by the caller (``write_text_atomic``)."""
    p = Path(path)
    if p.is_dir():
        raise YoloportError(f"{what} {p} is a folder; give a file name")
    if p.exists() and not overwrite:
        raise YoloportError(f"{what} {p} already exists; pass --overwrite to replace it, or choose another name")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise YoloportError(f"cannot write {what} {p}: a parent of it is a file") from None
    return p


LOCK_NAME = ".yoloport.lock"


_HELD: dict[str, int] = {}  # lock path -> open descriptor holding its flock


def lock_run_dir(path, what: str = "output folder") -> Path:
    """Lock ``path`` for this run: an exclusive ``flock`` on ``path/.yoloport.lock`` (which holds
    this process id, for the message a second run gets). Returns the lock's path.

    Of two runs locking one folder, exactly one gets it; the other gets a YoloportError naming the
    process that holds it. The kernel drops the lock when its process dies, so a killed run never
    blocks the folder. Release it with :func:`unlock_run_dir`."""
    import fcntl

    lock = Path(path) / LOCK_NAME
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise YoloportError(f"{what} {path} is in use by another yoloport run (process {holder}); "
                                "wait for it or choose another folder") from None
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if not current:  # its holder released (unlinked) it between our open and our lock: again
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD[str(lock)] = fd
        return lock


def unlock_run_dir(lock: Path | None) -> None:
    """Release a lock taken by :func:`lock_run_dir` in this process (the lock file is removed)."""
    fd = _HELD.pop(str(lock), None) if lock is not None else None
    if fd is None:
        return
    try:
        os.unlink(lock)
    except OSError:
        pass
    os.close(fd)


def claim_out_dir(out, *, overwrite: bool, explicit: bool, what: str = "--out") -> tuple[Path, Path]:
    """The folder a command that builds artifacts (quantize, sensitivity) writes into, and its lock.

    - ``explicit=False`` (the command's default folder): a new one when it is taken (``<name>2``,
      ``<name>3``..., claimed with an exclusive mkdir), unless ``overwrite``.
    - ``explicit`` (the user's ``--out``): created if missing; an existing one must hold nothing
      (or ``overwrite``).
    - in every case the folder is then locked (:func:`lock_run_dir`) before "is it empty?" is asked,
      so of two runs started together on one folder (its creator included) exactly one proceeds.
    Returns ``(folder, lock)``; release the lock with :func:`unlock_run_dir` when done.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise YoloportError(f"{what} {out} is a file, not a folder")
    if not explicit and not overwrite and out.is_dir() and any(out.iterdir()):
        out = claim_run_dir(out, increment=True, what=what)  # the default folder is taken: a new one
    elif not out.exists():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(out)
        except FileExistsError:
            if not explicit:
                out = claim_run_dir(out, increment=True, what=what)
        except NotADirectoryError:
            raise YoloportError(f"cannot create {what} {out}: a parent of it is a file") from None
    # a folder this run just created is locked too: of a creator and a run that found it a moment
    # later, whichever locks first proceeds and the other stops here
    lock = lock_run_dir(out, what)
    if not overwrite and any(p.name != LOCK_NAME for p in out.iterdir()):
        unlock_run_dir(lock)
        raise YoloportError(f"{what} {out} is not empty: choose another folder or pass --overwrite")
    return out, lock
