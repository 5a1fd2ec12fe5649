"""Build the class-list JSON files of the registry from the official metadata in `sources/`.

`python -m fisa.data.classes.build [--check]` writes `fisa/data/classes/<dataset>.json`
(or, with --check, fails if a file differs from what the sources give). The files in
`sources/` are the reference metadata stored verbatim (FC-CLIP's `*_with_prompt_eng.txt`
synonym lists: "<id>:<name>,<synonym>,...") or as id/isthing/name tables transcribed from
the official category lists (COCO panoptic, ADE20K-150 panoptic, Mapillary Vistas v1.2);
ADE-150's synonyms are FC-CLIP's `ade20k_150_with_prompt_eng.txt` (its objectInfo150
names, split at ", ", stay in `name`: the `objectinfo150` vocabulary of the registry);
SOURCES records where each came from (repository, path, commit).

Each output JSON: {"dataset", "num_classes", "sources": [...], "classes": [{"index", "id",
"name", "names", "isthing"}]} where `names` are the synonyms used for the text
classifier (first = display name) and `name` the dataset's official category name.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "sources"

FCCLIP = {"repo": "bytedance/fc-clip", "commit": "a8dc32c862dfc1fe55dcf9287090e080d9ee5f50"}


def _src(path: str, what: str, file: str) -> dict:
    return {**FCCLIP, "path": path, "what": what, "file": f"sources/{file}"}


SOURCES = {
    "coco": [
        _src("fcclip/data/datasets/coco_panoptic_with_prompt_eng.txt", "synonyms", "coco_panoptic_with_prompt_eng.txt"),
        _src("fcclip/data/datasets/openseg_classes.py (COCO_CATEGORIES, = panopticapi "
             "panoptic_coco_categories.json)", "category ids, names, isthing", "coco_panoptic_categories.tsv"),
    ],
    "ade150": [
        _src("fcclip/data/datasets/ade20k_150_with_prompt_eng.txt", "synonyms", "ade20k_150_with_prompt_eng.txt"),
        _src("fcclip/data/datasets/openseg_classes.py (ADE20K_150_CATEGORIES, = objectInfo150 names)",
             "ids 0..149, names (comma-separated; split at ', ' for the objectinfo150 vocabulary), isthing",
             "ade20k_150_categories.tsv"),
    ],
    "ade847": [_src("fcclip/data/datasets/ade20k_847_with_prompt_eng.txt", "names and synonyms",
                    "ade20k_847_with_prompt_eng.txt")],
    "pc59": [_src("fcclip/data/datasets/pascal_ctx_59_with_prompt_eng.txt", "names and synonyms",
                  "pascal_ctx_59_with_prompt_eng.txt")],
    "pc459": [_src("fcclip/data/datasets/pascal_ctx_459_with_prompt_eng.txt", "names and synonyms",
                   "pascal_ctx_459_with_prompt_eng.txt")],
    "mapillary": [
        _src("fcclip/data/datasets/mapillary_vistas_with_prompt_eng.txt", "synonyms",
             "mapillary_vistas_with_prompt_eng.txt"),
        _src("fcclip/data/datasets/openseg_classes.py (MAPILLARY_VISTAS_SEM_SEG_CATEGORIES, = Mapillary "
             "config_v1.2.json 'instances')", "category ids 1..65, names, isthing", "mapillary_vistas_v1.2_categories.tsv"),
    ],
}
EXPECTED = {"coco": 133, "ade150": 150, "ade847": 847, "pc59": 59, "pc459": 459, "mapillary": 65}


class SourceError(ValueError):
    """A source file is missing or malformed (the message names the file and line)."""


def read_prompt_eng(file: str) -> dict[int, list[str]]:
    """FC-CLIP's "<id>:<name>,<synonym>,..." lines -> {id: synonyms}, skipping invalid ids."""
    path = SRC / file
    out: dict[int, list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        idx, sep, names = line.partition(":")
        if not sep or not idx.strip().isdigit():
            raise SourceError(f"{path}:{n}: expected '<id>:<names>', got {line!r}")
        if int(idx) == 0 or names == "invalid_class_id":
            continue
        syn = [s.strip() for s in names.split(",") if s.strip()]
        # Drop repeated synonyms (e.g. "mailbox" twice in Mapillary's list) but keep the order.
        out[int(idx)] = list(dict.fromkeys(syn))
    return out


def read_table(file: str) -> list[dict]:
    """A tab-separated id/isthing/name table -> rows (id int, isthing bool, name stripped)."""
    path = SRC / file
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    try:
        return [{"id": int(r["id"]), "isthing": r["isthing"] == "1", "name": r["name"].strip()} for r in rows]
    except (KeyError, ValueError, AttributeError) as e:
        raise SourceError(f"{path}: malformed row ({e})") from None


def split_names(name: str) -> list[str]:
    """An objectInfo150 name split into its synonyms: "road, route" -> ["road", "route"]."""
    return [s.strip() for s in name.split(",") if s.strip()]


def _entries(name: str) -> list[dict]:
    if name in ("coco", "mapillary"):
        table = read_table("coco_panoptic_categories.tsv" if name == "coco" else "mapillary_vistas_v1.2_categories.tsv")
        syn = read_prompt_eng("coco_panoptic_with_prompt_eng.txt" if name == "coco"
                              else "mapillary_vistas_with_prompt_eng.txt")
        if sorted(syn) != [r["id"] for r in table]:
            raise SourceError(f"{name}: synonym ids do not match the category table's ids")
        return [{"id": r["id"], "name": r["name"], "names": syn[r["id"]], "isthing": r["isthing"]} for r in table]
    if name == "ade150":
        # FC-CLIP's synonyms; its line k is ADE class id k - 1 (line 0 is "invalid_class_id").
        table = read_table("ade20k_150_categories.tsv")
        syn = read_prompt_eng("ade20k_150_with_prompt_eng.txt")
        if sorted(syn) != [r["id"] + 1 for r in table]:
            raise SourceError("ade150: synonym ids 1..150 do not match the category table's ids 0..149")
        for r in table:  # a misaligned file would pair a class with another class's synonyms
            ours, theirs = [n.lower() for n in split_names(r["name"])], [n.lower() for n in syn[r["id"] + 1]]
            if not any(a in b or b in a for a in ours for b in theirs):  # "house" ~ "house exterior"
                raise SourceError(f"ade150: class {r['id']} ({r['name']!r}) shares no name with line "
                                  f"{r['id'] + 1} of the synonym file ({syn[r['id'] + 1]})")
        return [{"id": r["id"], "name": r["name"], "names": syn[r["id"] + 1], "isthing": r["isthing"]} for r in table]
    file = {"ade847": "ade20k_847_with_prompt_eng.txt", "pc59": "pascal_ctx_59_with_prompt_eng.txt",
            "pc459": "pascal_ctx_459_with_prompt_eng.txt"}[name]
    syn = read_prompt_eng(file)
    # Semantic-only benchmarks: label value = index (id 1..N in the file -> 0..N-1); no thing/stuff split
    # is defined, so every class is marked stuff (only panoptic inference uses the flag).
    return [{"id": None, "name": names[0], "names": names, "isthing": False} for _, names in sorted(syn.items())]


def build(name: str) -> dict:
    """The class-list document of dataset `name`."""
    entries = _entries(name)
    if len(entries) != EXPECTED[name]:
        raise SourceError(f"{name}: {len(entries)} classes from the sources, expected {EXPECTED[name]}")
    classes = [{"index": i, **e} for i, e in enumerate(entries)]
    return {"dataset": name, "num_classes": len(classes), "sources": SOURCES[name],
            "built_by": "python -m fisa.data.classes.build", "classes": classes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fisa.data.classes.build", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="fail if a JSON differs from what the sources give")
    args = p.parse_args(argv)
    from fisa.utils.io import atomic_write_text

    bad = []
    for name in EXPECTED:
        text = json.dumps(build(name), indent=1, ensure_ascii=False) + "\n"
        path = HERE / f"{name}.json"
        if args.check:
            if not path.exists() or path.read_text() != text:
                bad.append(str(path))
        else:
            atomic_write_text(path, text)
            print(f"wrote {path} ({EXPECTED[name]} classes)")
    if bad:
        print("out of date (rebuild with python -m fisa.data.classes.build): " + ", ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
