"""Writing whole or not at all (t2vlab.atomic): a failure at any point leaves the target as it was and
nothing behind; only the writer's own temporary names count as leftovers, and only those whose writer is
gone are removed; ``overwrite`` replaces only a folder t2vlab wrote, and a failed write says why."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import time

import pytest

from t2vlab import atomic, os_errors


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_file_appears_whole_with_normal_permissions(tmp_path):
    target = tmp_path / "a.json"
    with atomic.atomic_file(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and atomic.PARTIAL in tmp.name
        assert not target.exists()
        tmp.write_text("new")
    assert target.read_text() == "new" and names(tmp_path) == ["a.json"]
    assert target.stat().st_mode & 0o777 == atomic.new_file_mode()


@pytest.mark.parametrize("where", ["while writing", "at the rename"])
def test_a_failure_leaves_the_old_file_and_no_partial(tmp_path, monkeypatch, where):
    target = tmp_path / "w.safetensors"
    target.write_text("old")
    if where == "at the rename":
        monkeypatch.setattr(atomic.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError):
        with atomic.atomic_file(target) as tmp:
            tmp.write_text("half")
            if where == "while writing":
                raise OSError(28, "No space left on device")
    assert target.read_text() == "old" and names(tmp_path) == ["w.safetensors"]


def test_ctrl_c_is_cleaned_up_too(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_file(tmp_path / "v.mp4") as tmp:
            tmp.write_bytes(b"x")
            raise KeyboardInterrupt
    assert names(tmp_path) == []


def test_no_clobber_refuses_an_existing_file_before_and_after(tmp_path):
    target = tmp_path / "v.mp4"
    target.write_text("mine")
    with pytest.raises(FileExistsError):
        with atomic.atomic_file(target, overwrite=False):
            pass
    other = tmp_path / "late.mp4"
    with pytest.raises(FileExistsError):
        with atomic.atomic_file(other, overwrite=False) as tmp:
            tmp.write_text("ours")
            other.write_text("someone else's, meanwhile")
    assert other.read_text() == "someone else's, meanwhile" and target.read_text() == "mine"
    assert not atomic.leftovers(tmp_path)


def test_write_text_and_a_folder_as_a_whole(tmp_path):
    atomic.write_text(tmp_path / "t.txt", "é")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "é"
    out = tmp_path / "ckpt"
    with atomic.atomic_folder(out) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(FileExistsError):
        with atomic.atomic_folder(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic.atomic_folder(out, overwrite=True) as tmp:
            (tmp / "y").write_text("2")
            raise RuntimeError("failed half-way")
    assert names(out) == [atomic.MARKER, "x"] and names(tmp_path) == ["ckpt", "t.txt"]
    said = []
    with atomic.atomic_folder(out, overwrite=True, say=said.append) as tmp:
        (tmp / "y").write_text("2")
    assert names(out) == [atomic.MARKER, "y"]
    assert said == [f"replacing {out} (a folder t2vlab wrote: 1 files in 0 folders, 0.0 MB: x) once the new one is "
                    "complete"]


def test_overwrite_replaces_only_a_folder_t2vlab_wrote(tmp_path, caplog):
    """A folder without the marker, a file and a link are refused, before anything is written, with what is there."""
    theirs = tmp_path / "theirs"
    (theirs / "sub").mkdir(parents=True)
    (theirs / "sub" / "precious.bin").write_bytes(b"x" * 1000)
    (tmp_path / "file").write_text("a file")
    (tmp_path / "link").symlink_to(theirs)
    for target, words in ((theirs, "was not written by t2vlab"), (tmp_path / "file", "is a file"),
                          (tmp_path / "link", "is a symbolic link")):
        entered = []
        with pytest.raises(atomic.NotWrittenByT2vlab, match=words) as e:
            with atomic.atomic_folder(target, overwrite=True):
                entered.append(1)
        assert not entered and isinstance(e.value, FileExistsError)
    with pytest.raises(atomic.NotWrittenByT2vlab, match=r"would remove 1 files in 1 folders, 0.0 MB: sub\."):
        atomic.check_replaceable(theirs)
    assert (theirs / "sub" / "precious.bin").read_bytes() == b"x" * 1000 and (tmp_path / "file").read_text() == "a file"
    assert sorted(names(tmp_path)) == ["file", "link", "theirs"]  # no temporary folder either
    with caplog.at_level(logging.WARNING, "t2vlab"):  # by default the replacement is said as a warning
        with atomic.atomic_folder(tmp_path / "ours") as tmp:
            (tmp / "a").write_text("1")
        with atomic.atomic_folder(tmp_path / "ours", overwrite=True) as tmp:
            (tmp / "b").write_text("2")
    assert "replacing" in caplog.text and names(tmp_path / "ours") == [atomic.MARKER, "b"]


def test_an_output_that_holds_or_lies_inside_its_input_is_refused(tmp_path):
    src = tmp_path / "models" / "ms"
    src.mkdir(parents=True)
    for out, how in ((src, "is"), (tmp_path / "models", "contains"), (src / "converted", "is inside")):
        with pytest.raises(ValueError, match=f"{how} the input"):
            atomic.check_apart(out, [src])
    atomic.check_apart(tmp_path / "models" / "converted", [src])  # a sibling is fine


def test_save_into_a_folder_replaces_files_only_in_a_folder_t2vlab_wrote(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "config.json").write_text("{}")
    assert atomic.folder_to_write(theirs, ["other.json"]) == theirs  # new files may join any folder
    with pytest.raises(atomic.NotWrittenByT2vlab, match="holds config.json"):
        atomic.folder_to_write(theirs, ["config.json"])
    new = atomic.folder_to_write(tmp_path / "new", ["config.json"])
    assert atomic.written_by_t2vlab(new) and atomic.folder_to_write(new, ["config.json"]) == new


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_are_only_the_writers_own_and_only_stale_ones_are_removed(tmp_path):
    """A leftover of a process that is gone is removed; one of a live process (a concurrent batch writing in the
    same folder) is kept; one whose writer cannot be asked (another host, an old unsigned name) only when
    untouched for STALE_AFTER seconds."""
    host = atomic._host()
    (tmp_path / ".hidden").write_text("the user's")
    (tmp_path / "v.mp4").write_text("done")
    dead = tmp_path / f".v.mp4{atomic.PARTIAL}{dead_pid()}@{host}~abc.mp4"
    live = tmp_path / f".w.mp4{atomic.PARTIAL}{os.getppid()}@{host}~abc.mp4"
    far_new = tmp_path / f".x.mp4{atomic.PARTIAL}1@elsewhere~abc.mp4"
    far_old = tmp_path / f".ckpt{atomic.PARTIAL}1@elsewhere~q1"
    unsigned_old = tmp_path / f".y.mp4{atomic.PARTIAL}abc.mp4"
    for p in (dead, live, far_new, unsigned_old):
        p.write_text("killed mid-write")
    far_old.mkdir()
    (far_old / "inner").write_text("x")
    hour_ago = time.time() - atomic.STALE_AFTER - 10
    for p in (far_old / "inner", far_old, unsigned_old):
        os.utime(p, (hour_ago, hour_ago))
    assert [p.name for p in atomic.leftovers(tmp_path, "v.mp4")] == [dead.name]
    assert len(atomic.leftovers(tmp_path)) == 5
    removed = atomic.remove_leftovers(tmp_path)
    assert sorted(removed) == sorted([dead, far_old, unsigned_old])
    assert names(tmp_path) == sorted([".hidden", "v.mp4", live.name, far_new.name])
    assert atomic.remove_leftovers(tmp_path, stale_only=False) == sorted([far_new, live])


def test_a_write_removes_what_an_interrupted_write_of_the_same_target_left(tmp_path):
    dead = tmp_path / f".v.json{atomic.PARTIAL}{dead_pid()}@{atomic._host()}~abc.json"
    dead.write_text("half")
    atomic.write_text(tmp_path / "v.json", "{}")
    assert names(tmp_path) == ["v.json"]


def test_a_failed_write_says_why_about_the_target(tmp_path, monkeypatch):
    """OS errors name the target, not the temporary file; a library's error that hides a full disk says so."""
    target = tmp_path / "state" / "optimizer.pt"
    with pytest.raises(OSError) as e:
        with atomic.atomic_file(target) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert e.value.errno == errno.ENOSPC and str(target) in str(e.value) and "free some space" in str(e.value)
    assert atomic.PARTIAL not in str(e.value)
    monkeypatch.setattr(os_errors.shutil, "disk_usage", lambda p: os_errors.shutil._ntuple_diskusage(10, 10, 0))
    with pytest.raises(OSError, match="no space left on the disk holding") as e:  # torch's zip writer's words
        with atomic.atomic_file(target):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    assert isinstance(e.value.__cause__, RuntimeError)
    with pytest.raises(OSError, match="read-only file system"):  # safetensors' Rust writer's words
        with atomic.atomic_folder(tmp_path / "ro"):
            raise RuntimeError('Error while serializing: IoError(Os { code: 30, kind: ReadOnlyFilesystem })')
    atomic.write_text(target, "a file")
    with pytest.raises(OSError, match="optimizer.pt is a file, where a folder is needed"):
        atomic.write_text(target / "x.json", "{}")  # ENOTDIR or EEXIST, whichever mkdir meets
    monkeypatch.undo()
    with pytest.raises(ZeroDivisionError):  # other errors pass unchanged
        with atomic.atomic_file(target):
            raise ZeroDivisionError("not the disk")
