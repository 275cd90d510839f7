"""Writing files and folders whole or not at all: the one way the package writes anything.

A file is written under a temporary name beside its target and renamed into place when complete; a
rename within one folder is atomic, so a reader sees the old file or the new one, never half of one.
An error or Ctrl-C (or a full disk) on the way removes the temporary file and leaves the target as it
was. Folders work the same way: filled under a temporary sibling name, renamed when complete.

    with atomic_file("video.mp4") as tmp:       # tmp: ".video.mp4.t2vlab-partial-4242@host~k3j2.mp4" beside it
        encode(tmp)                             # the target appears only if this returns
    write_text("notes.json", json.dumps(...))
    with atomic_folder("ckpt", overwrite=True) as tmp:
        save_everything_into(tmp)

**Never delete what t2vlab did not write.** Every folder ``atomic_folder`` makes holds a marker file,
``MARKER`` (``.t2vlab-written``). ``overwrite=True`` replaces only such a folder: an existing folder without
the marker (or a file, or a link) is refused with ``NotWrittenByT2vlab`` (a ``FileExistsError``) saying what
it holds, before anything is written; a folder that has it is replaced, and ``say`` (default: the
``t2vlab`` logger's warning) is told what will be removed. :func:`check_apart` refuses an output that
contains, or lies inside, one of the inputs (``convert models/ms models`` must not replace ``models/``).

**Litter.** The temporary names carry ``PARTIAL`` and the writer's process id and host (and keep the
target's extension, so encoders that choose a format by it still work), so that what a killed process left
behind can be told apart from anything else in the folder: ``leftovers(folder)`` lists only those. A
leftover is *stale* when its writer is gone: written on this host by a process that no longer runs, or (from
another host, or by a t2vlab too old to sign its names) untouched for ``STALE_AFTER`` seconds. Each write
first removes the stale leftovers of its own target, and ``remove_leftovers(folder)`` (which ``batch`` and
``finetune`` call on their output folders when they start) removes the stale ones of a folder: a process
that is still writing, also one started by a concurrent ``batch`` in the same folder, keeps its files.

A write that fails for want of space, on a read-only disk, for permissions, or because a file stands where a
folder is needed raises an ``OSError`` whose message says so about the target (``t2vlab.os_errors``), also
when the library doing the writing (torch, safetensors) hid the cause in its own exception.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from .os_errors import explained, write_failure

PARTIAL = ".t2vlab-partial-"
MARKER = ".t2vlab-written"  # in every folder atomic_folder makes: t2vlab may replace this folder
STALE_AFTER = 3600  # seconds untouched after which a leftover whose writer cannot be asked is stale

logger = logging.getLogger("t2vlab")


class NotWrittenByT2vlab(FileExistsError):
    """``overwrite=True`` met something t2vlab did not write (a folder without ``MARKER``, a file, a link)."""


def new_file_mode() -> int:
    """The permissions a file created normally would get (``mkstemp`` makes 0o600 files)."""
    try:  # Linux: read the umask without changing it (os.umask would change it briefly for every thread)
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


# ------------------------------------------------------------------------------------- temporary names
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:24] or "host"


def _temporary_name(path: Path) -> tuple[str, str]:
    """(prefix, suffix) of the temporary names for ``path``: ``.NAME.t2vlab-partial-PID@HOST~`` + random + suffix."""
    return f".{path.name}{PARTIAL}{os.getpid()}@{_host()}~", path.suffix


SIGNATURE = re.compile(re.escape(PARTIAL) + r"(\d+)@([A-Za-z0-9._-]*)~")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _last_touched(p: Path) -> float:
    """The newest modification time of ``p`` and (for a folder) of what is inside it."""
    times = [p.lstat().st_mtime]
    if p.is_dir() and not p.is_symlink():
        for root, dirs, files in os.walk(p):
            times += [os.lstat(os.path.join(root, n)).st_mtime for n in dirs + files]
    return max(times)


def is_stale(p: Path, now=None) -> bool:
    """Whether the leftover ``p``'s writer is gone (see the module docstring)."""
    m = SIGNATURE.search(p.name)
    if m and m[2] == _host():
        return not _alive(int(m[1]))
    try:
        return (now or time.time()) - _last_touched(p) > STALE_AFTER
    except OSError:  # vanished meanwhile: its writer finished or removed it
        return False


def leftovers(folder, name=None) -> list[Path]:
    """The temporary files and folders an interrupted write left in ``folder`` (for target ``name``, or any):
    only names this module makes, nothing else (a write in progress has such names too: see ``is_stale``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    prefix = f".{name}{PARTIAL}" if name is not None else "."
    return sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and PARTIAL in p.name)


def _remove(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


def remove_leftovers(folder, name=None, stale_only=True) -> list[Path]:
    """Delete the stale ``leftovers(folder, name)`` (``stale_only=False``: all of them, also those of writes
    still in progress); returns what was removed."""
    gone = [p for p in leftovers(folder, name) if not stale_only or is_stale(p)]
    for p in gone:
        _remove(p)
    return gone


# ------------------------------------------------------------------------------------------------ files
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


def _explain_failure(e: BaseException, target: Path, tmp: Path):
    """The exception to raise for a failed write of ``target`` (through ``tmp``): an OSError with an errno, or
    a library's error caused by the file system, as an explained OSError naming the path (the target's, not
    the temporary one); anything else unchanged (None)."""
    if isinstance(e, OSError):
        if e.errno is None:  # one of ours (FileExistsError("... pass overwrite=True")): already clear
            return None
        if getattr(e, "t2vlab_explained", False):  # by a write inside this one: name the target, not tmp
            if str(tmp) not in (e.strerror or ""):
                return None
            clear = OSError(e.errno, e.strerror.replace(str(tmp), str(target)))
            clear.t2vlab_explained = True
            return clear
        name = str(e.filename or tmp)
        return explained(e, str(target) + name[len(str(tmp)):] if name.startswith(str(tmp)) else name)
    return write_failure(e, target)


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise explained(e, folder) from e


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
    _mkdir(path.parent)
    remove_leftovers(path.parent, path.name)  # what an interrupted write of this target left
    prefix, suffix = _temporary_name(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    except OSError as e:
        raise explained(e, path) from e
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, new_file_mode())
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_no_clobber(tmp, path)
    except BaseException as e:  # Ctrl-C included: never leave the partial file behind
        tmp.unlink(missing_ok=True)
        clear = _explain_failure(e, path, tmp)
        if clear is not None and clear is not e:
            raise clear from e
        raise


def write_bytes(path, data: bytes, overwrite=True) -> Path:
    with atomic_file(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str, overwrite=True) -> Path:
    """``text`` as UTF-8, atomically."""
    return write_bytes(path, text.encode("utf-8"), overwrite)


# ---------------------------------------------------------------------------------------------- folders
def written_by_t2vlab(folder) -> bool:
    """Whether ``folder`` is a folder (not a link) holding ``MARKER``: one t2vlab wrote and may replace."""
    folder = Path(folder)
    return folder.is_dir() and not folder.is_symlink() and (folder / MARKER).is_file()


def contents(folder) -> str:
    """'12 files in 3 folders, 4.2 MB: a, b, c, ...': what removing ``folder`` would remove."""
    files, folders, size = 0, 0, 0
    names = sorted(p.name for p in Path(folder).iterdir() if p.name != MARKER)
    for root, dirs, fs in os.walk(folder):
        fs = [f for f in fs if f != MARKER]
        folders += len(dirs)
        files += len(fs)
        size += sum(os.lstat(os.path.join(root, f)).st_size for f in fs)
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return f"{files} files in {folders} folders, {size / 1e6:.1f} MB{': ' + shown if names else ''}"


def check_replaceable(path) -> str:
    """What replacing ``path`` would remove, if t2vlab wrote it (a folder holding ``MARKER``);
    ``NotWrittenByT2vlab`` naming what is there otherwise. '' when nothing is there."""
    path = Path(path)
    if not os.path.lexists(path):
        return ""
    if path.is_symlink() or not path.is_dir():
        kind = "a symbolic link" if path.is_symlink() else "a file"
        raise NotWrittenByT2vlab(f"{path} is {kind}, not a folder t2vlab wrote: t2vlab replaces only folders it "
                                 f"wrote itself. Move or delete it yourself, or choose another path")
    if not written_by_t2vlab(path):
        raise NotWrittenByT2vlab(
            f"{path} exists and was not written by t2vlab (it has no {MARKER} file), so it is not replaced: "
            f"replacing it would remove {contents(path)}. Move or delete it yourself if you mean to, or "
            f"choose another path")
    return f"{path} (a folder t2vlab wrote: {contents(path)})"


def check_apart(out, sources, what="the output") -> None:
    """Refuse (ValueError) an output folder that is one of ``sources``, contains one, or lies inside one:
    writing it would replace or mix with what is read."""
    o = Path(out).expanduser().resolve()
    for source in sources:
        s = Path(source).expanduser().resolve()
        if o == s or o in s.parents or s in o.parents:
            how = "is" if o == s else "contains" if o in s.parents else "is inside"
            raise ValueError(f"{what} {out} {how} the input {source}: choose an output folder outside it "
                             f"(and not holding it)")


def mark_folder(folder) -> Path:
    """Make ``folder`` (and its parents) if needed and mark it as t2vlab's (``MARKER``)."""
    folder = Path(folder)
    _mkdir(folder)
    if not (folder / MARKER).is_file():
        write_text(folder / MARKER, "written by t2vlab; t2vlab may replace this folder (see t2vlab/atomic.py)\n")
    return folder


def folder_to_write(folder, names=()) -> Path:
    """``folder``, ready for files ``names`` to be written into it one by one (``save_pretrained``): a new
    folder is made and marked as t2vlab's; an existing one may receive new files, but replacing one of
    ``names`` there needs a folder t2vlab wrote (``NotWrittenByT2vlab`` otherwise, before anything is written)."""
    folder = Path(folder)
    if not os.path.lexists(folder):
        return mark_folder(folder)
    there = [n for n in names if os.path.lexists(folder / n)]
    if there and not written_by_t2vlab(folder):
        raise NotWrittenByT2vlab(
            f"{folder} holds {', '.join(there)}, and t2vlab did not write that folder (it has no {MARKER} file), so "
            f"they are not replaced. Move or delete them yourself if you mean to, or write to a new folder")
    return folder


@contextlib.contextmanager
def atomic_folder(path, overwrite=False, say=None, mark=True):
    """Yield a temporary sibling folder to fill; it is renamed to ``path`` when the block ends without an
    exception (an exception or Ctrl-C removes it and leaves ``path`` as it was). An existing ``path`` is an
    error unless ``overwrite``, and then only a folder t2vlab wrote is replaced (``check_replaceable``); both
    are checked before anything is written, and ``say(message)`` hears what will be removed. ``mark``: put
    ``MARKER`` into the new folder (off for scratch folders that only their writer ever removes)."""
    path = Path(path)
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
        (say or logger.warning)(f"replacing {check_replaceable(path)} once the new one is complete")
    _mkdir(path.parent)
    remove_leftovers(path.parent, path.name)
    prefix, _ = _temporary_name(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    except OSError as e:
        raise explained(e, path) from e
    old = None
    try:
        if mark:
            mark_folder(tmp)
        yield tmp
        if os.path.lexists(path):  # still t2vlab's? (checked again: it may have changed meanwhile)
            if not overwrite:
                raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
            check_replaceable(path)
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}{PARTIAL}{os.getpid()}@{_host()}~old", dir=path.parent))
            os.replace(path, old / path.name)  # out of the way first: the new folder takes its place at once
        os.replace(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / path.name).exists() and not os.path.lexists(path):
            os.replace(old / path.name, path)  # put the old folder back
        clear = _explain_failure(e, path, tmp)
        if clear is not None and clear is not e:
            raise clear from e
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_merge(path):
    """Like ``atomic_folder`` for a folder that may already exist: yield a temporary sibling folder to fill. When
    the block ends without an exception, a ``path`` that does not exist becomes that folder (whole or not at all);
    an existing folder receives its files one rename each (each file whole or not at all), replacing files of the
    same names and leaving every other file as it was: how a second variant joins a checkpoint folder. An exception
    removes the temporary folder and leaves ``path`` as it was. Files of an existing folder are replaced only if
    t2vlab wrote it (``folder_to_write``: ``NotWrittenByT2vlab`` before any is moved)."""
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
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        folder_to_write(path, [str(p.relative_to(tmp)) for p in files])  # replacing needs a folder t2vlab wrote
        for src in files:
            target = path / src.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
