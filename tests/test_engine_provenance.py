"""The dataset checksum of evaluation records: what it covers, and that a change shows."""
from __future__ import annotations

import shutil

import pytest

from fisa.data.registry import get_meta
from fisa.engine.provenance import dataset_checksum


def _ade150_val(root):
    """A hand-made ADE-150 validation split: panoptic JSON, panoptic PNGs, semantic labels, images."""
    paths = get_meta("ade150").paths("val", root)
    for key in ("panoptic_dir", "sem_seg_dir", "image_dir"):
        paths[key].mkdir(parents=True)
    paths["panoptic_json"].write_text('{"annotations": []}')
    for stem in ("a", "b"):
        (paths["panoptic_dir"] / f"{stem}.png").write_bytes(b"pan-" + stem.encode())
        (paths["sem_seg_dir"] / f"{stem}.png").write_bytes(b"sem-" + stem.encode())
        (paths["image_dir"] / f"{stem}.jpg").write_bytes(b"img-" + stem.encode())
    return paths


def test_checksum_changes_with_any_annotation_file_and_not_with_the_root(tmp_path):
    paths = _ade150_val(tmp_path / "data")
    before = dataset_checksum("ade150", "val", tmp_path / "data")
    assert before.startswith("sha256:") and len(before) == len("sha256:") + 64
    assert dataset_checksum("ade150", "val", tmp_path / "data") == before  # stable
    shutil.copytree(tmp_path / "data", tmp_path / "moved")
    assert dataset_checksum("ade150", "val", tmp_path / "moved") == before  # paths are relative to the root

    (paths["sem_seg_dir"] / "b.png").write_bytes(b"sem-B")  # one label file, same size
    edited = dataset_checksum("ade150", "val", tmp_path / "data")
    assert edited != before
    (paths["panoptic_json"]).write_text('{"annotations": [1]}')
    assert dataset_checksum("ade150", "val", tmp_path / "data") not in (before, edited)
    # a renamed annotation file changes it too (same bytes, other name)
    moved = tmp_path / "moved"
    p = get_meta("ade150").paths("val", moved)
    (p["panoptic_dir"] / "a.png").rename(p["panoptic_dir"] / "c.png")
    assert dataset_checksum("ade150", "val", moved) != before


def test_checksum_covers_annotations_not_images(tmp_path):
    paths = _ade150_val(tmp_path)
    before = dataset_checksum("ade150", "val", tmp_path)
    (paths["image_dir"] / "a.jpg").write_bytes(b"another image")
    assert dataset_checksum("ade150", "val", tmp_path) == before


def test_missing_annotations_are_an_error_naming_the_path(tmp_path):
    paths = _ade150_val(tmp_path)
    paths["panoptic_json"].unlink()
    with pytest.raises(FileNotFoundError, match="ade20k_panoptic_val.json.*panoptic_json is missing"):
        dataset_checksum("ade150", "val", tmp_path)
