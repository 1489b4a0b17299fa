import os
from pathlib import Path

from conftest import make_image

from crossmodal.media.files import discover


def test_discovers_images_recursively_sorted(photos: Path):
    found = discover(photos)
    names = [os.path.relpath(f.path, photos) for f in found.files]
    assert names == [
        "blue.webp",
        "green.png",
        "red.jpg",
        "trips/2019/black.gif",
        "trips/2019/cyan.png",
        "trips/yellow.jpg",
    ]
    assert all(f.size > 0 and f.mtime_ns > 0 for f in found.files)


def test_hidden_files_and_folders_are_skipped_unless_asked(tmp_path: Path):
    make_image(tmp_path / ".hidden.jpg", "red")
    make_image(tmp_path / ".cache" / "x.jpg", "red")
    make_image(tmp_path / "seen.jpg", "red")
    assert [Path(f.path).name for f in discover(tmp_path).files] == ["seen.jpg"]
    assert len(discover(tmp_path, include_hidden=True).files) == 3


def test_non_image_suffixes_are_ignored(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "clip.mp4").write_bytes(b"x")
    make_image(tmp_path / "UPPER.JPG", "red", fmt="JPEG")
    assert [Path(f.path).name for f in discover(tmp_path).files] == ["UPPER.JPG"]


def test_broken_symlink_and_loop_are_reported_not_fatal(tmp_path: Path):
    make_image(tmp_path / "a" / "ok.jpg", "red")
    (tmp_path / "a" / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    (tmp_path / "a" / "dangling-notes.txt").symlink_to(tmp_path / "missing.txt")  # not a photo
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")
    found = discover(tmp_path)
    assert [Path(f.path).name for f in found.files] == ["ok.jpg"]
    assert [(Path(s.path).name, s.reason) for s in found.failed] == [
        ("dangling.jpg", "broken symlink")
    ]


def test_heic_without_its_plugin_is_reported_as_unsupported_by_name(tmp_path: Path, monkeypatch):
    import crossmodal.media.files as files

    monkeypatch.setattr(files, "supported_suffixes", lambda: files.IMAGE_SUFFIXES)
    (tmp_path / "phone.heic").write_bytes(b"x")
    found = discover(tmp_path)
    assert [(Path(s.path).name, s.reason) for s in found.failed] == [
        ("phone.heic", "unsupported format .heic (HEIC/HEIF: install pillow-heif to index it)")
    ]


def test_progress_callback_counts_found_images(tmp_path: Path):
    for i in range(1000):
        (tmp_path / f"{i:04}.png").write_bytes(b"x")
    seen: list[int] = []
    discover(tmp_path, on_progress=seen.append)
    assert seen == [500, 1000]
