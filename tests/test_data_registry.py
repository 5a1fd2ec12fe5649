"""The dataset registry: names, class lists, flags, ignore labels, category ids and the layout."""
from __future__ import annotations

import json

import pytest

from fisa.data.classes import build as classes_build
from fisa.data.registry import CLASSES_DIR, DatasetError, get_meta, list_datasets, panoptic_gt
from fisa.utils.markers import marker_path

SIZES = {"coco": 133, "ade150": 150, "ade847": 847, "pc59": 59, "pc459": 459, "mapillary": 65,
         "refcoco": 0, "refcocoplus": 0}


def test_every_dataset_is_registered_with_its_vocabulary_size():
    assert list_datasets() == list(SIZES)
    for name, n in SIZES.items():
        meta = get_meta(name)
        assert meta.name == name
        assert meta.num_classes == n == len(meta.classes) == len(meta.thing)


@pytest.mark.parametrize("name,things", [("coco", 80), ("ade150", 100), ("mapillary", 37)])
def test_thing_counts_of_the_panoptic_benchmarks(name, things):
    # COCO panoptic: 80 things + 53 stuff; ADE20K-150 panoptic: 100 + 50; Mapillary v1.2: 37 + 28.
    assert sum(get_meta(name).thing) == things


def test_ignore_labels_and_tasks():
    expect = {"coco": (255, {"panoptic", "semantic"}), "ade150": (255, {"panoptic", "semantic"}),
              "ade847": (65535, {"semantic"}), "pc59": (255, {"semantic"}), "pc459": (65535, {"semantic"}),
              "mapillary": (65, {"panoptic", "semantic"}), "refcoco": (255, {"referring"}),
              "refcocoplus": (255, {"referring"})}
    for name, (ignore, tasks) in expect.items():
        meta = get_meta(name)
        assert meta.ignore_label == ignore, name
        assert set(meta.tasks) == tasks, name
        assert meta.eval_split == "val"


def test_panoptic_category_ids():
    coco = get_meta("coco")
    assert coco.category_ids[:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]
    assert coco.category_ids[-1] == 200 and coco.category_ids == sorted(coco.category_ids)
    assert coco.thing[coco.category_id_to_index[90]] and not coco.thing[coco.category_id_to_index[92]]
    assert get_meta("ade150").category_ids == list(range(150))
    assert get_meta("mapillary").category_ids == list(range(1, 66))
    for name in ("ade847", "pc59", "pc459"):
        assert get_meta(name).category_ids is None
        with pytest.raises(DatasetError, match="no panoptic category ids"):
            get_meta(name).category_id_to_index


def test_class_names_and_synonyms_from_the_sources():
    coco = get_meta("coco")
    assert coco.classes[0][0] == "person" and "child" in coco.classes[0]
    assert coco.class_names[coco.category_id_to_index[118]] == "wood floor"  # FC-CLIP's name for floor-wood
    ade = get_meta("ade150")  # FC-CLIP's ade20k_150_with_prompt_eng.txt: line k is class k - 1
    assert ade.classes[6] == ["road", "route", "street", "roads", "streets", "routes"]
    assert ade.classes[25] == ["house exterior"] and ade.synonyms == "fcclip"
    # the objectInfo150 names split at "," stay available (config eval.ade150_synonyms: objectinfo150)
    split = get_meta("ade150", "objectinfo150")
    assert split.classes[6] == ["road", "route"] and split.classes[8] == ["window"]  # source has "window " (space)
    assert split.classes[25] == ["house"] and split.synonyms == "objectinfo150" and split.thing == ade.thing
    assert sum(a != b for a, b in zip(ade.classes, split.classes)) == 96
    with pytest.raises(DatasetError, match="coco: unknown synonym lists 'objectinfo150'; coco has: fcclip"):
        get_meta("coco", "objectinfo150")
    assert get_meta("ade847").classes[-1] == ["adding machine", "totalizer", "totaliser"]
    assert get_meta("pc59").class_names[0] == "aeroplane" and get_meta("pc59").class_names[-1] == "wood piece"
    assert get_meta("pc459").class_names[-1] == "wool"
    mapi = get_meta("mapillary")
    assert mapi.class_names[-1] == "ego vehicle" and mapi.classes[40] == ["mailbox", "postbox", "letter box"]
    for name in list_datasets():
        for c in get_meta(name).classes:
            assert c and all(s and s == s.strip() for s in c) and len(set(c)) == len(c), (name, c)


def test_ade150_synonyms_equal_fcclip_file_line_by_line():
    # parsed here independently of the builder: "<id>:<syn>,<syn>,..." with id 0 the invalid class
    lines = (CLASSES_DIR / "sources" / "ade20k_150_with_prompt_eng.txt").read_text().splitlines()
    assert lines[0] == "0:invalid_class_id" and len(lines) == 151
    expected = [[w.strip() for w in line.split(":", 1)[1].split(",")] for line in lines[1:]]
    assert [int(line.split(":")[0]) for line in lines[1:]] == list(range(1, 151))
    assert get_meta("ade150").classes == [list(dict.fromkeys(e)) for e in expected]


def test_class_json_files_are_up_to_date_and_record_their_sources(capsys):
    assert classes_build.main(["--check"]) == 0
    for name in ("coco", "ade150", "ade847", "pc59", "pc459", "mapillary"):
        data = json.loads((CLASSES_DIR / f"{name}.json").read_text())
        assert data["num_classes"] == SIZES[name] == len(data["classes"])
        for src in data["sources"]:
            assert src["repo"] and src["path"] and len(src["commit"]) == 40
            assert (CLASSES_DIR / src["file"]).is_file()


def test_layout_paths_match_the_detectron2_fcclip_convention(tmp_path):
    rel = lambda name, split: {k: str(v.relative_to(tmp_path)) for k, v in get_meta(name).paths(split, tmp_path).items()}
    assert rel("coco", "val") == {"image_dir": "coco/val2017", "sem_seg_dir": "coco/panoptic_semseg_val2017",
                                  "panoptic_json": "coco/annotations/panoptic_val2017.json",
                                  "panoptic_dir": "coco/panoptic_val2017"}
    assert rel("coco", "train")["panoptic_json"] == "coco/annotations/panoptic_train2017.json"
    assert rel("ade150", "val") == {
        "image_dir": "ADEChallengeData2016/images/validation",
        "sem_seg_dir": "ADEChallengeData2016/annotations_detectron2/validation",
        "panoptic_json": "ADEChallengeData2016/ade20k_panoptic_val.json",
        "panoptic_dir": "ADEChallengeData2016/ade20k_panoptic_val"}
    assert rel("ade847", "val") == {"image_dir": "ADE20K_2021_17_01/images_detectron2/validation",
                                    "sem_seg_dir": "ADE20K_2021_17_01/annotations_detectron2/validation"}
    assert rel("pc59", "val")["sem_seg_dir"] == "pascal_ctx_d2/annotations_ctx59/validation"
    assert rel("pc459", "val")["sem_seg_dir"] == "pascal_ctx_d2/annotations_ctx459/validation"
    assert get_meta("pc459").layout("val").sem_seg_ext == ".tif" and get_meta("pc59").layout("val").sem_seg_ext == ".png"
    assert rel("mapillary", "val") == {
        "image_dir": "mapillary_vistas/validation/images", "sem_seg_dir": "mapillary_vistas/validation/labels",
        "panoptic_json": "mapillary_vistas/validation/panoptic/panoptic_2018.json",
        "panoptic_dir": "mapillary_vistas/validation/panoptic"}
    assert rel("refcoco", "val") == {"image_dir": "coco/train2014", "refs": "refcoco/refcoco/refs(unc).p",
                                     "instances_json": "refcoco/refcoco/instances.json"}
    assert rel("refcocoplus", "testA")["refs"] == "refcoco/refcoco+/refs(unc).p"
    assert get_meta("refcocoplus").layout("testB").refs_split == "testB"


def test_ade847_accepts_fcclip_prepare_scripts_location(tmp_path):
    meta = get_meta("ade847")
    assert meta.base_dir(tmp_path) == "ADE20K_2021_17_01"  # nothing there yet: the canonical place
    (tmp_path / "ade" / "ADE20K_2021_17_01").mkdir(parents=True)
    assert meta.paths("val", tmp_path)["image_dir"] == tmp_path / "ade/ADE20K_2021_17_01/images_detectron2/validation"
    (tmp_path / "ADE20K_2021_17_01").mkdir()  # both present: the loader's location wins
    assert meta.base_dir(tmp_path) == "ADE20K_2021_17_01"


def test_split_aliases_and_errors(tmp_path):
    coco = get_meta("coco")
    assert coco.split("val2017") is coco.split("val") and coco.split("training") is coco.split("train")
    with pytest.raises(DatasetError, match=r"coco: unknown split 'test'; known: train, val"):
        coco.split("test")
    with pytest.raises(DatasetError, match=r"unknown dataset 'ade20k'; known: coco, ade150"):
        get_meta("ade20k")


def test_panoptic_gt_and_markers(tmp_path):
    js, d = panoptic_gt("ade150", tmp_path)
    assert js == tmp_path / "ADEChallengeData2016/ade20k_panoptic_val.json"
    assert d == tmp_path / "ADEChallengeData2016/ade20k_panoptic_val"
    with pytest.raises(DatasetError, match="pc59 has no panoptic ground truth"):
        panoptic_gt("pc59", tmp_path)
    assert marker_path(tmp_path, "coco") == tmp_path / ".fisa" / "coco.prepare.done"
    assert marker_path(tmp_path, "coco", "download") == tmp_path / ".fisa" / "coco.download.done"


def test_builder_rejects_a_malformed_source(tmp_path, monkeypatch):
    (tmp_path / "pascal_ctx_59_with_prompt_eng.txt").write_text("0:invalid_class_id\nbad line\n")
    monkeypatch.setattr(classes_build, "SRC", tmp_path)
    with pytest.raises(classes_build.SourceError, match=r"pascal_ctx_59_with_prompt_eng.txt:2: expected"):
        classes_build.build("pc59")
    (tmp_path / "pascal_ctx_59_with_prompt_eng.txt").write_text("0:invalid_class_id\n1:a\n2:b\n")
    with pytest.raises(classes_build.SourceError, match="pc59: 2 classes from the sources, expected 59"):
        classes_build.build("pc59")


def test_describe_reports_what_is_prepared(tmp_path, capsys):
    from fisa.data.registry import describe, main

    (tmp_path / ".fisa").mkdir()
    (tmp_path / ".fisa" / "pc59.prepare.done").write_text("{}")
    (tmp_path / "pascal_ctx_d2/images/validation").mkdir(parents=True)
    rows = {r["dataset"]: r for r in describe(tmp_path)}
    assert rows["pc59"]["prepared"] and not rows["coco"]["prepared"]
    assert rows["pc59"]["missing"] == [str(tmp_path / "pascal_ctx_d2/annotations_ctx59/validation")]
    assert rows["mapillary"]["ignore_label"] == 65 and rows["coco"]["things"] == 80
    assert main(["--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pc59" in out and "NOT prepared" in out and len(out.splitlines()) == 8


def test_official_split_sizes():
    from fisa.data.registry import OFFICIAL_SIZES, expected_size

    # SPEC.md's evaluation splits (COCO val2017 5,000; ADE val 2,000; PC val 5,105; Mapillary val 2,000)
    assert {n: OFFICIAL_SIZES[n]["val"] for n in ("coco", "ade150", "ade847", "pc59", "pc459", "mapillary")} == {
        "coco": 5000, "ade150": 2000, "ade847": 2000, "pc59": 5105, "pc459": 5105, "mapillary": 2000}
    assert OFFICIAL_SIZES["coco"]["train"] == 118287
    # Yu et al. 2016: RefCOCO 50,000 referred objects, RefCOCO+ 49,856, over the four UNC splits
    assert sum(OFFICIAL_SIZES["refcoco"].values()) == 50000 and sum(OFFICIAL_SIZES["refcocoplus"].values()) == 49856
    for name in list_datasets():
        assert set(OFFICIAL_SIZES[name]) == set(get_meta(name).splits), name
    assert expected_size("ade150", "validation", "/nonexistent") == (2000, "official size (fisa.data.registry.OFFICIAL_SIZES)")


def test_the_config_schema_takes_its_dataset_names_from_the_registry():
    import copy

    from fisa.config import ConfigError, _schema, load_config, validate_config

    assert _schema()["$defs"]["dataset"]["enum"] == list_datasets()
    config = copy.deepcopy(load_config())
    name = next(iter(config["experiments"]))
    config["experiments"][name]["datasets"] = ["cityscapes"]
    with pytest.raises(ConfigError, match="cityscapes"):
        validate_config(config)


def test_refcoco_preparation_reads_cocos_download():
    # the workflow's `prepare`/`download` rules take these as inputs (workflow/rules/data.smk)
    assert get_meta("refcoco").downloads_of == get_meta("refcocoplus").downloads_of == ("coco",)
    assert all(get_meta(n).downloads_of == () for n in list_datasets() if not n.startswith("refcoco"))
