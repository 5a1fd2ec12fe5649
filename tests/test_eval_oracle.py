"""An oracle prediction scores exactly 100 through the real evaluation (`fisa.engine.evaluate.evaluate`),
for every dataset format, and swapping two classes costs exactly their share.

The seam: `evaluate` builds its model with `load_run_model`; here that returns `OracleModel`,
which answers each image with its ground truth (one query per segment, logits +-50). The
inference resize is made the identity so the oracle's masks reach post-processing unchanged
(the resize/upsampling is not what these tests check; the label mapping is). Everything
after the model is the production path: `run_model` -> `predict` (semantic argmax, panoptic
merging) -> contiguous index -> dataset category id -> panoptic PNG + JSON -> `pq_compute`;
the semantic PNG (16-bit beyond 255 classes); referring masks -> `ReferringEvaluator`.

Expected scores after the swap are computed here from the ground-truth files alone: with K
classes scored, swapping the predictions of two of them (a <-> b) makes both score 0 and
leaves the others at 100, so mIoU and PQ become 100 (K - 2) / K."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fisa.config import load_config, resolve_experiment
from fisa.data.datasets import build_dataset
from fisa.data.registry import get_meta, panoptic_gt
from fisa.data.synthetic import generate
from fisa.engine import evaluate as evaluate_module
from fisa.engine import inference
from fisa.engine.provenance import dataset_checksum

LOGIT = 50.0
SEGMENT_DATASETS = ("coco", "ade150", "ade847", "pc59", "pc459", "mapillary")


def _key(image: torch.Tensor, expressions=None) -> str:
    h = hashlib.sha1(image.to(torch.uint8).contiguous().numpy().tobytes())
    h.update(repr(tuple(expressions or ())).encode())
    return h.hexdigest()


class OracleModel(torch.nn.Module):
    """Answers each evaluated image with its ground truth, looked up by the image's bytes
    (and, for referring, the expressions). `swap` {a: b, b: a} relabels classes;
    `wrong_refs` is a set of keys whose referring mask is answered with its complement."""

    def __init__(self, dataset, num_classes: int, swap: dict | None = None, wrong_refs: set | None = None):
        super().__init__()
        self.num_classes, self.swap, self.wrong_refs = num_classes, swap or {}, wrong_refs or set()
        self.items = {}
        for i in range(len(dataset)):
            item = dataset[i]
            self.items[_key(item["image"], item.get("expressions"))] = item
        self._vocabulary: list[str] = []

    def encode_vocabulary(self, classes):
        self._vocabulary = [c[0] for c in classes]
        return torch.zeros(len(classes), 1)

    def forward(self, x, vocabulary, targets=None):
        image = x[0]
        key = _key(image, self._vocabulary)
        if key in self.items:  # referring: one query per expression, then a distractor (the complement)
            mask = self.items[key]["mask"]
            if key in self.wrong_refs:
                mask = ~mask
            n = len(self._vocabulary)
            masks = torch.cat([mask[None].expand(n, *mask.shape), ~mask[None]])
            class_logits = torch.full((n + 1, n + 1), -10.0)  # above the "no object" query's -LOGIT
            class_logits[torch.arange(n), torch.arange(n)] = LOGIT
            class_logits[n] = 0.0  # the distractor: below every expression's own query
        else:
            item = self.items[_key(image)]
            masks = item["masks"]  # crowd regions included: they are scored as ignored
            labels = torch.tensor([self.swap.get(int(c), int(c)) for c in item["labels"]], dtype=torch.int64)
            class_logits = torch.full((len(labels), self.num_classes + 1), -LOGIT)
            class_logits[torch.arange(len(labels)), labels] = LOGIT
        # + one "no object" query, so that an image without segments works too
        mask_logits = torch.cat([torch.where(masks, LOGIT, -LOGIT), torch.full((1, *masks.shape[-2:]), -LOGIT)])
        no_object = torch.full((1, class_logits.shape[1]), -LOGIT)
        no_object[0, -1] = LOGIT
        return {"mask_logits": mask_logits[None], "class_logits": torch.cat([class_logits, no_object])[None]}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle") / "datasets"
    generate(str(root), seed=0, sizes={"coco_train": 1, "coco": 4, "ade150": 4, "ade847": 4, "pc59": 4,
                                       "mapillary": 4, "refcoco": 4})
    return root


def _run(tmp_path, monkeypatch, data_root, dataset, **oracle_kwargs):
    config = load_config(overrides={"presets": {"small": {"data_root": str(data_root),
                                                          "cache_dir": str(tmp_path / "cache")}}})
    resolved = resolve_experiment(config, "baseline", "small", seed=0)
    meta = get_meta(dataset)
    ds = build_dataset(dataset, meta.eval_split, str(data_root))
    model = OracleModel(ds, len(meta.classes), **oracle_kwargs)
    monkeypatch.setattr(evaluate_module, "load_run_model", lambda *a, **k: (model, None))
    monkeypatch.setattr(inference, "resize_for_inference", lambda image, *a: image.float())
    out = tmp_path / f"{dataset}.json"
    rec = evaluate_module.evaluate(resolved, dataset, None, out, device=torch.device("cpu"))
    return rec, out, ds, meta


def _semantic_classes(ds, meta) -> list[int]:
    """Classes with ground-truth pixels (outside the ignore label) in the evaluated images."""
    present = set()
    for i in range(len(ds)):
        present |= set(np.unique(ds[i]["sem_seg"].numpy()).tolist())
    present.discard(meta.ignore_label)
    return sorted(present)


def _panoptic_categories(dataset, data_root) -> list[int]:
    """Category ids with at least one non-crowd segment in the ground-truth panoptic JSON."""
    gt_json, _ = panoptic_gt(dataset, str(data_root))
    gt = json.loads(Path(gt_json).read_text())
    return sorted({s["category_id"] for a in gt["annotations"] for s in a["segments_info"]
                   if not s.get("iscrowd", 0)})


@pytest.mark.parametrize("dataset", SEGMENT_DATASETS)
def test_oracle_scores_100(tmp_path, monkeypatch, data_root, dataset):
    rec, out, ds, meta = _run(tmp_path, monkeypatch, data_root, dataset)
    m = rec["metrics"]
    assert m["mIoU"] == 100.0 and m["pACC"] == 100.0 and m["mACC"] == 100.0, m
    # provenance: the checksum of the split's annotations, the one the scorecard shows
    p = rec["provenance"]
    assert p["dataset_split"] == meta.eval_split
    assert p["dataset_checksum"] == dataset_checksum(dataset, meta.eval_split, data_root)
    if "panoptic" in meta.tasks:
        assert m["PQ"] == m["SQ"] == m["RQ"] == 100.0, m
    # the written semantic predictions are the ground truth, 16-bit beyond 255 classes
    for i in range(len(ds)):
        item = ds[i]
        png = np.array(Image.open(out.with_suffix("") / "semantic" / f"{Path(item['file_name']).stem}.png"))
        assert png.dtype == (np.uint16 if len(meta.classes) > 255 else np.uint8)
        gt = item["sem_seg"].numpy()
        valid = gt != meta.ignore_label
        assert valid.any() and np.array_equal(png[valid], gt[valid])


@pytest.mark.parametrize("dataset", SEGMENT_DATASETS)
def test_swapping_two_classes_costs_exactly_their_share(tmp_path, monkeypatch, data_root, dataset):
    meta = get_meta(dataset)
    ds = build_dataset(dataset, meta.eval_split, str(data_root))
    present = _semantic_classes(ds, meta)
    if "panoptic" in meta.tasks:
        index_of = {cid: i for i, cid in enumerate(meta.category_ids)}
        categories = _panoptic_categories(dataset, data_root)
        a, b = index_of[categories[0]], index_of[categories[-1]]
    else:
        a, b = present[0], present[-1]
    assert a != b and a in present and b in present
    rec, *_ = _run(tmp_path, monkeypatch, data_root, dataset, swap={a: b, b: a})
    m, per_class = rec["metrics"], rec["per_class"]
    k = len(present)
    assert m["mIoU"] == pytest.approx(100 * (k - 2) / k, abs=1e-9), (k, m)
    names = [c[0] for c in meta.classes]
    assert per_class[names[a]]["IoU"] == per_class[names[b]]["IoU"] == 0.0
    if len(set(names)) == len(names):  # ADE-847 repeats names ("pedestal", ...): per_class is keyed by name
        assert sum(v["IoU"] == 100.0 for v in per_class.values() if v.get("IoU") is not None) == k - 2
    if "panoptic" in meta.tasks:
        kp = len(categories)
        assert m["PQ"] == pytest.approx(100 * (kp - 2) / kp, abs=1e-9), (kp, m)
        assert per_class[names[a]]["PQ"] == per_class[names[b]]["PQ"] == 0.0


def test_referring_oracle_scores_100_and_a_wrong_mask_costs_its_share(tmp_path, monkeypatch, data_root):
    rec, *_ = _run(tmp_path / "right", monkeypatch, data_root, "refcoco")
    assert rec["metrics"]["mIoU"] == rec["metrics"]["oIoU"] == 100.0, rec["metrics"]
    assert rec["provenance"]["dataset_checksum"] == dataset_checksum("refcoco", "val", data_root)
    assert all(rec["metrics"][f"P@{t}"] == 100.0 for t in (0.5, 0.6, 0.7, 0.8, 0.9)), rec["metrics"]

    ds = build_dataset("refcoco", get_meta("refcoco").eval_split, str(data_root))
    items = [ds[i] for i in range(len(ds))]
    wrong = items[0]  # answered with the complement of its mask: IoU 0 for each of its expressions
    rec, *_ = _run(tmp_path / "wrong", monkeypatch, data_root, "refcoco",
                   wrong_refs={_key(wrong["image"], wrong["expressions"])})
    n_all = sum(len(it["expressions"]) for it in items)
    n_wrong = len(wrong["expressions"])
    # the LAVT protocol compares masks on a size x size grid (nearest resize, PIL), so the
    # shares are counted there; the complement's union with its mask is the whole grid
    size = load_config()["presets"]["small"]["defaults"]["eval"]["referring_size"]

    def pixels(mask):
        grid = Image.fromarray(mask.numpy().astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
        return int((np.asarray(grid) > 0).sum())

    inter = sum(pixels(it["mask"]) * len(it["expressions"]) for it in items[1:])
    union = inter + n_wrong * size * size
    assert rec["metrics"]["mIoU"] == pytest.approx(100 * (n_all - n_wrong) / n_all, abs=1e-9)
    assert rec["metrics"]["oIoU"] == pytest.approx(100 * inter / union, abs=1e-9)
