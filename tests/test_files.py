"""Results on disk (magedit.files) and the interfaces' error rules (magedit.errors): generated
names take nothing from user text but [a-z0-9-], a result gets a folder of its own and pruning
touches only such folders; errors are one line, and out-of-memory is recognised without torch."""

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import scene
from PIL import Image

from magedit import files
from magedit.errors import is_out_of_memory, one_line
from magedit.files import result_name, save_result, write_atomic, write_image

REPO = Path(__file__).resolve().parents[1]
NAME = re.compile(r"(?P<stem>[a-z0-9-]+)-[0-9a-f]{4}\.png")
RESULT_FOLDER = re.compile(r"[0-9a-f]{16}")


# ----------------------------------------------------------------------------------------------
# result_name


@pytest.mark.parametrize(
    ("description", "stem"),
    [
        ("green sofa", "green-sofa"),
        ("A Green SOFA in a room", "a-green-sofa"),  # the first three words, lowercase
        ("../../etc/passwd", "etc-passwd"),
        ("<script>alert(1)</script>", "script-alert-1"),
        ("C:\\Windows\\system32\\cmd.exe", "c-windows-system32"),
        ("name\x00with\nnul and newline", "name-with-nul"),
        ("~/.ssh/id_rsa", "ssh-id-rsa"),
        ("%2e%2e%2f%2e%2e%2fetc", "2e-2e-2f"),
        ("grüne 🐱 Sofa", "gr-ne-sofa"),  # only ASCII letters and digits survive
        ("", "magedit"),
        ("   ", "magedit"),
        ("../..//\\..", "magedit"),
        ("🐱 猫 ☃", "magedit"),
        ("x" * 500, "x" * 40),  # at most NAME_CHARS characters
    ],
)
def test_result_name_takes_only_lowercase_letters_digits_and_dashes(description, stem):
    name = result_name(description)
    match = NAME.fullmatch(name)
    assert match is not None, name
    assert match["stem"] == stem
    assert "/" not in name and "\\" not in name and ".." not in name
    assert not match["stem"].startswith("-") and not match["stem"].endswith("-")
    assert Path(name).name == name and len(name) <= files.NAME_CHARS + len("-0000.png")


def test_result_name_has_a_random_suffix_and_the_extension_asked_for():
    assert result_name("green sofa", ".webp").endswith(".webp")
    names = {result_name("green sofa") for _ in range(30)}
    assert len(names) > 1  # 4 random hex digits: 30 draws do not all collide


# ----------------------------------------------------------------------------------------------
# save_result


def test_save_result_writes_into_a_folder_of_its_own(tmp_path):
    image = scene(48, 64)
    path = save_result(image, tmp_path, "../../etc/passwd")
    assert path.parent.parent == tmp_path
    assert RESULT_FOLDER.fullmatch(path.parent.name)
    assert NAME.fullmatch(path.name)["stem"] == "etc-passwd"
    assert path.resolve().is_relative_to(tmp_path.resolve())
    assert np.array_equal(np.asarray(Image.open(path)), image)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    other = save_result(image, tmp_path, "../../etc/passwd")
    assert other.parent != path.parent  # the same description twice: two folders


def test_keep_prunes_only_the_oldest_result_folders_never_a_user_file(tmp_path):
    image = scene(16, 16)
    # What the user keeps in the same folder: files (one with a result folder's name), folders
    # whose names are not 16 lowercase hex digits.
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "0123456789abcdef").write_text("a file, not a result folder")
    folders = ("mine", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0")
    for name in folders:
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep.png").write_bytes(b"mine")
    user = sorted(p.name for p in tmp_path.iterdir())
    past = time.time() - 3600
    paths = []
    for number in range(5):
        paths.append(save_result(image, tmp_path, f"result {number}", keep=2))
        # Older by a clear margin than the next result (whatever the clock's resolution).
        os.utime(paths[-1].parent, (past + number, past + number))
        assert paths[-1].is_file()
    made = sorted(p.name for p in tmp_path.iterdir() if p.name not in user)
    assert made == sorted(p.parent.name for p in paths[-2:])
    assert all(not p.exists() for p in paths[:3]) and all(p.is_file() for p in paths[-2:])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name in user) == user
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert all((tmp_path / name / "keep.png").read_bytes() == b"mine" for name in folders)


def test_without_keep_nothing_is_pruned(tmp_path):
    paths = [save_result(scene(16, 16), tmp_path) for _ in range(4)]
    assert all(p.is_file() for p in paths)
    assert all(NAME.fullmatch(p.name)["stem"] == "magedit" for p in paths)
    assert len(list(tmp_path.iterdir())) == 4


# ----------------------------------------------------------------------------------------------
# write_atomic, write_image


def test_write_atomic_gives_the_usual_permissions_and_replaces_whole(tmp_path):
    path = tmp_path / "new" / "out.bin"  # the folder is made
    write_atomic(path, lambda f: f.write(b"first"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    files.write_bytes(path, b"second")
    assert path.read_bytes() == b"second" and list(path.parent.iterdir()) == [path]

    def fails(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, fails)
    assert path.read_bytes() == b"second" and list(path.parent.iterdir()) == [path]


@pytest.mark.parametrize("suffix", [".png", ".webp", ".PNG"])
def test_png_and_webp_keep_every_pixel(tmp_path, suffix):
    image = scene(48, 64)
    write_image(tmp_path / f"out{suffix}", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / f"out{suffix}")), image)


def test_jpeg_is_written_as_jpeg(tmp_path):
    image = scene(48, 64)
    write_image(tmp_path / "out.jpg", image)
    with Image.open(tmp_path / "out.jpg") as written:
        assert written.format == "JPEG" and written.size == (64, 48)


# ----------------------------------------------------------------------------------------------
# errors


def test_one_line():
    assert one_line("a\nb\r\n\tc   d ") == "a b c d"
    assert one_line(ValueError("the mask\nis empty")) == "the mask is empty"
    assert one_line("") == "" and one_line(3) == "3"


def test_out_of_memory_is_recognised_without_torchs_error_types(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as if torch were never imported
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED: Out Of Memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"))
    assert not is_out_of_memory(RuntimeError("expected scalar type Float but found Half"))
    assert not is_out_of_memory(ValueError("out of memory"))  # bad input, not a failed device
    assert not is_out_of_memory(KeyboardInterrupt())


def test_out_of_memory_with_torch_loaded():
    import torch

    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA error: allocation failed"))
    assert not is_out_of_memory(RuntimeError("a shape mismatch"))


def test_the_error_rules_import_no_torch():
    probe = "import sys, magedit.errors, magedit.files; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "False", done.stderr
