"""Writing files and folders whole or not at all: the one way the package writes anything.

A file is written under a temporary name beside its target and renamed into place when complete; a
rename within one folder is atomic, so a reader sees the old file or the new one, never half of one.
An error or Ctrl-C (or a full disk) on the way removes the temporary file and leaves the target as it
was. Folders work the same way: filled under a temporary sibling name, renamed when complete.

    with atomic_file("video.mp4") as tmp:       # tmp: ".video.mp4.t2vlab-partial-k3j2.mp4" beside it
        encode(tmp)                             # the target appears only if this returns
    write_text("notes.json", json.dumps(...))
    with atomic_folder("ckpt", overwrite=True) as tmp:
        save_everything_into(tmp)

The temporary names carry ``PARTIAL`` (and keep the target's extension, so encoders that choose a format
by it still work), so that what a killed process left behind can be told apart from anything else in
the folder: ``leftovers(folder)`` lists only those, ``remove_leftovers(folder)`` deletes only those.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

PARTIAL = ".t2vlab-partial-"


def new_file_mode() -> int:
    """The permissions a file created normally would get (``mkstemp`` makes 0o600 files)."""
    try:  # Linux: read the umask without changing it (os.umask would change it briefly for every thread)
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _temporary_name(path: Path) -> tuple[str, str]:
    return f".{path.name}{PARTIAL}", path.suffix


def _move_no_clobber(tmp: Path, target: Path) -> None:
    """Rename unless the target exists (a hard link fails if it does: no race with a check before)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it") from None
    except OSError:  # a filesystem without hard links: check, then rename (best effort)
        if os.path.lexists(target):
            raise FileExistsError(f"{target} exists; pass overwrite=True to replace it") from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_file(path, overwrite=True):
    """Yield a temporary path beside ``path`` to write; rename it to ``path`` when the block ends without an
    exception (with ``overwrite=False`` an existing ``path`` is an error, also if it appeared meanwhile).
    On any exception the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _temporary_name(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, new_file_mode())
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_no_clobber(tmp, path)
    except BaseException:  # Ctrl-C included: never leave the partial file behind
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path, data: bytes, overwrite=True) -> Path:
    with atomic_file(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str, overwrite=True) -> Path:
    """``text`` as UTF-8, atomically."""
    return write_bytes(path, text.encode("utf-8"), overwrite)


@contextlib.contextmanager
def atomic_folder(path, overwrite=False):
    """Yield a temporary sibling folder to fill; it is renamed to ``path`` when the block ends without an
    exception (an exception or Ctrl-C removes it and leaves ``path`` as it was). An existing ``path`` is an
    error unless ``overwrite``, checked before anything is written."""
    path = Path(path)
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, _ = _temporary_name(path)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    try:
        yield tmp
        if os.path.lexists(path):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def leftovers(folder, name=None) -> list[Path]:
    """The temporary files and folders an interrupted write left in ``folder`` (for target ``name``, or any):
    only names this module makes, nothing else."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    prefix = f".{name}{PARTIAL}" if name is not None else "."
    return sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and PARTIAL in p.name)


def remove_leftovers(folder, name=None) -> list[Path]:
    """Delete ``leftovers(folder, name)``; returns what was removed."""
    gone = leftovers(folder, name)
    for p in gone:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    return gone


@contextlib.contextmanager
def atomic_merge(path):
    """Like ``atomic_folder`` for a folder that may already exist: yield a temporary sibling folder to fill. When
    the block ends without an exception, a ``path`` that does not exist becomes that folder (whole or not at all);
    an existing folder receives its files one rename each (each file whole or not at all), replacing files of the
    same names and leaving every other file as it was: how a second variant joins a checkpoint folder. An exception
    removes the temporary folder and leaves ``path`` as it was."""
    path = Path(path)
    if not os.path.lexists(path):
        with atomic_folder(path) as tmp:
            yield tmp
        return
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder")
    prefix, _ = _temporary_name(path)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    try:
        yield tmp
        for src in sorted(p for p in tmp.rglob("*") if p.is_file()):
            target = path / src.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
