"""What an operating-system error means, in words that name the path and say what to do: the one mapping
used by every writer and reader of the package (``t2vlab.atomic``) and by the commands (the CLI, ``batch``,
``finetune``, ``convert``), so that a full disk reads the same everywhere:

    no space left on the disk holding runs/a/optimizer.pt: free some space there
    (df -h runs/a shows how much is left), or write somewhere else

* :func:`explain` turns an ``OSError`` (or a ``UnicodeDecodeError`` of a text file) into such a sentence.
* :func:`explained` makes a new ``OSError`` of the same kind (``OSError(errno, ...)`` picks the subclass:
  ``FileNotFoundError``, ``PermissionError``, ...) whose message is that sentence; raise it ``from`` the
  original, which keeps the details.
* :func:`write_failure` recognises a write that failed inside a library which does not raise ``OSError``
  (torch's zip writer says ``[enforce fail at inline_container.cc:672] . unexpected pos``, safetensors'
  Rust writer ``... (os error 28)``): the errno in its message, or a disk that is now full.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

NEARLY_FULL = 1 << 20  # bytes: a write that failed with less than this left on its disk failed for want of space

# errno -> (what happened to ``path``, what to do); {path} and {folder} are filled in
MEANINGS = {
    errno.ENOSPC: ("no space left on the disk holding {path}",
                   "free some space there (df -h {folder} shows how much is left), or write somewhere else"),
    errno.EDQUOT: ("the disk quota is used up on the disk holding {path}",
                   "free some space in your quota, or write somewhere else"),
    errno.EFBIG: ("{path} would be larger than this process may write",
                  "raise the file size limit (ulimit -f) or write to another file system"),
    errno.EROFS: ("{path} is on a read-only file system",
                  "write somewhere else, or mount that file system read-write"),
    errno.EACCES: ("permission denied for {path}",
                   "check who owns {folder} (ls -ld {folder}), or write somewhere you may"),
    errno.EPERM: ("operation not permitted on {path}",
                  "check who owns it and its flags (ls -ld), or write somewhere you may"),
    errno.ENOTDIR: ("{path}: {blocker} is a file, where a folder is needed",
                    "rename or move that file, or choose another path"),
    errno.EEXIST: ("{path} exists", "choose another path, or move it away"),
    errno.EISDIR: ("{path} is a folder, where a file is needed", "give a file name inside it"),
    errno.ENOENT: ("no such file or folder: {path}", "check the path"),
    errno.ELOOP: ("{path} is a symbolic link that loops: following it never reaches a file",
                  "fix or remove the link (ls -l shows where it points)"),
    errno.ENAMETOOLONG: ("{path}: a name is too long for the file system", "use a shorter name"),
    errno.EIO: ("input/output error on {path}: the disk or the network file system failed",
                "check the disk (dmesg), then try again"),
}


def _blocker(path: Path) -> Path | None:
    """The first part of ``path`` that exists and is not a folder (why a folder cannot be made there)."""
    for part in [*reversed(path.parents), path]:
        if os.path.lexists(part) and not part.is_dir():
            return part
    return None


def explain(e: BaseException, path=None) -> str:
    """A sentence naming the path and what to do, for an OSError or a UnicodeDecodeError of ``path``."""
    if getattr(e, "t2vlab_explained", False):
        return e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    if isinstance(e, UnicodeDecodeError):
        bad = e.object[e.start:e.start + 1].hex() if isinstance(e.object, (bytes, bytearray)) else "?"
        return (f"{path or 'the file'} is not UTF-8 text (byte 0x{bad} at position {e.start} cannot be decoded): "
                f"save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > NEW)")
    path = Path(path if path is not None else (getattr(e, "filename", None) or "?"))
    code = getattr(e, "errno", None)
    if code == errno.EEXIST and path.exists() and not path.is_dir():
        code = errno.ENOTDIR  # mkdir over a file: a file stands where a folder is needed
        blocker = path
    else:
        blocker = _blocker(path) if code == errno.ENOTDIR else None
    words = dict(path=path, folder=path.parent if not path.is_dir() else path, blocker=blocker or "a part of it")
    said = getattr(e, "strerror", None) or str(e) or type(e).__name__  # the OS's own words, kept
    if code not in MEANINGS:
        return f"{path}: {said}"
    what, todo = MEANINGS[code]
    return f"{what.format(**words)} ({said}, errno {errno.errorcode[code]}): {todo.format(**words)}"


def explained(e: OSError, path=None) -> OSError:
    """A new OSError of the same kind whose message is ``explain(e, path)`` (raise it ``from e``)."""
    if getattr(e, "t2vlab_explained", False):
        return e
    new = OSError(e.errno, explain(e, path)) if e.errno is not None else OSError(explain(e, path))
    new.t2vlab_explained = True
    return new


ERRNO_IN_MESSAGE = re.compile(r"\(os error (\d+)\)|\bcode: (\d+)|\berrno:? (\d+)", re.I)


def write_failure(e: BaseException, path) -> OSError | None:
    """An explained OSError for a write of ``path`` that failed with a non-OSError ``e`` because of the
    file system (an errno in its message, or the disk is now full), else None (it failed for another reason)."""
    if isinstance(e, OSError) or not isinstance(e, Exception):
        return None
    m = ERRNO_IN_MESSAGE.search(str(e))
    code = int(next(g for g in m.groups() if g)) if m else None
    if code is None:
        folder = Path(path).parent
        while not folder.is_dir() and folder != folder.parent:
            folder = folder.parent
        try:
            if shutil.disk_usage(folder).free < NEARLY_FULL:
                code = errno.ENOSPC
        except OSError:
            return None
    if code not in MEANINGS:
        return None
    return explained(OSError(code, os.strerror(code)), path)


def not_a_file(path) -> OSError | None:
    """Why ``path``, which is there (``os.path.lexists``), cannot be read as a file: a symbolic link that loops
    or points nowhere, a folder, a file we may not read; None for a readable file or nothing there (the caller
    says "not found" then)."""
    path = Path(path)
    if not os.path.lexists(path):
        return None
    try:
        path.stat()
    except OSError as e:
        if e.errno == errno.ENOENT and path.is_symlink():
            new = FileNotFoundError(errno.ENOENT, f"{path} is a symbolic link to {os.readlink(path)!r}, which does "
                                                  "not exist: fix or remove the link")
            new.t2vlab_explained = True
            return new
        return explained(e, path)
    if not os.path.isfile(path) or os.path.isdir(path):
        return explained(IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)), path)
    if not os.access(path, os.R_OK):
        return explained(PermissionError(errno.EACCES, os.strerror(errno.EACCES)), path)
    return None
