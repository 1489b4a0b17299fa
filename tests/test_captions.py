from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from crossmodal.errors import DatasetError, MissingImagesError
from crossmodal.media.captions import read_captions, read_class_folders


def solid(path: Path, colour: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(
        "RGB", (8, 8), {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}[colour]
    ).save(path)
    return path


def test_csv_rows_of_one_image_merge_into_its_captions(tmp_path: Path) -> None:
    solid(tmp_path / "img" / "a.png", "red")
    solid(tmp_path / "img" / "b.png", "blue")
    (tmp_path / "caps.csv").write_text(
        "image,caption,label\nimg/a.png,a red one,r\nimg/b.png,a blue one,b\nimg/a.png,red,r\n"
    )
    dataset = read_captions(tmp_path / "caps.csv")
    assert [(i.path.name, i.captions, i.label) for i in dataset.items] == [
        ("a.png", ("a red one", "red"), "r"),
        ("b.png", ("a blue one",), "b"),
    ]
    assert dataset.caption_count == 3
    assert dataset.has_labels


def test_jsonl_accepts_caption_or_captions_and_an_image_root(tmp_path: Path) -> None:
    solid(tmp_path / "photos" / "a.png", "red")
    solid(tmp_path / "photos" / "b.png", "green")
    lines = [{"image": "a.png", "captions": ["one", "two"]}, {"image": "b.png", "caption": "three"}]
    path = tmp_path / "caps.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    dataset = read_captions(path, image_root=tmp_path / "photos")
    assert [i.captions for i in dataset.items] == [("one", "two"), ("three",)]
    assert not dataset.has_labels


def test_missing_images_are_listed(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", "red")
    (tmp_path / "caps.csv").write_text("image,caption\na.png,x\ngone.png,y\n")
    with pytest.raises(MissingImagesError) as info:
        read_captions(tmp_path / "caps.csv")
    assert info.value.missing == [str(tmp_path / "gone.png")]


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("caps.csv", "file_name,words\na.png,x\n", "caps.csv"),
        ("caps.csv", "image,caption\na.png,\n", "caps.csv:2"),
        ("caps.jsonl", '{"image": "a.png", "caption": "x"}\n{"image": "a.png"\n', "caps.jsonl:2"),
        ("caps.jsonl", '{"image": "a.png", "captions": []}\n', "caps.jsonl:1"),
        ("caps.txt", "a.png x\n", "caps.txt"),
    ],
)
def test_malformed_captions_files_name_the_place(
    tmp_path: Path, name: str, text: str, where: str
) -> None:
    solid(tmp_path / "a.png", "red")
    (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError) as info:
        read_captions(tmp_path / name)
    assert info.value.path == str(tmp_path / where)


def test_class_folders_read_sorted_with_spaces_for_underscores(tmp_path: Path) -> None:
    solid(tmp_path / "sky_blue" / "1.png", "blue")
    solid(tmp_path / "red" / "2.png", "red")
    solid(tmp_path / "red" / "1.png", "red")
    (tmp_path / "red" / "notes.txt").write_text("not an image")
    classes = read_class_folders(tmp_path)
    assert classes.classes == ("red", "sky blue")
    assert [p.name for p in classes.paths] == ["1.png", "2.png", "1.png"]
    assert classes.targets == (0, 0, 1)


def test_class_folders_need_two_classes(tmp_path: Path) -> None:
    solid(tmp_path / "red" / "1.png", "red")
    with pytest.raises(DatasetError):
        read_class_folders(tmp_path)
