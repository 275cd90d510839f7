"""Writing whole or not at all (t2vlab.atomic): a failure at any point leaves the target as it was and
nothing behind; only the writer's own temporary names count as leftovers."""

from __future__ import annotations

import os

import pytest

from t2vlab import atomic


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
    assert names(out) == ["x"] and names(tmp_path) == ["ckpt", "t.txt"]
    with atomic.atomic_folder(out, overwrite=True) as tmp:
        (tmp / "y").write_text("2")
    assert names(out) == ["y"]


def test_leftovers_are_only_the_writers_own(tmp_path):
    (tmp_path / ".hidden").write_text("the user's")
    (tmp_path / f".v.mp4{atomic.PARTIAL}abc.mp4").write_text("killed mid-write")
    (tmp_path / f".ckpt{atomic.PARTIAL}q1").mkdir()
    (tmp_path / "v.mp4").write_text("done")
    assert [p.name for p in atomic.leftovers(tmp_path, "v.mp4")] == [f".v.mp4{atomic.PARTIAL}abc.mp4"]
    removed = atomic.remove_leftovers(tmp_path)
    assert len(removed) == 2 and names(tmp_path) == [".hidden", "v.mp4"]
    assert os.path.exists(tmp_path / ".hidden")
