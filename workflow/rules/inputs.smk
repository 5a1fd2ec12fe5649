# Inputs that shape an output besides the config: the analysis data files (layouts, targets,
# paper numbers), class lists and prompt templates. Each rule lists, as inputs, small files
# holding exactly its share of them, so an edit reruns exactly what it shapes (Snakemake's
# mtime trigger) and nothing else. Plain Python; analysis.smk, evaluate.smk and train.smk
# use it.
import json

from fisa.utils.io import atomic_write_text

SECTIONS_DIR = ".snakemake/fisa/sections"
LAYOUTS_FILE = REPO / "analysis/layouts.yaml"
PAPER_NUMBERS_FILE = REPO / "analysis/paper_numbers.csv"
TEMPLATES_FILE = REPO / "fisa/models/prompt_templates.json"
CLASSES_DIR = REPO / "fisa/data/classes"


def _write_if_changed(path, text):
    """Write `text` to `path` (atomically) unless it already holds it: its mtime then moves
    only on a real change, which is what Snakemake's mtime rerun trigger compares."""
    path = Path(path)
    if not (path.exists() and path.read_text() == text):
        atomic_write_text(path, text)
    return str(path)


def _paper_rows(tables):
    import csv

    with open(PAPER_NUMBERS_FILE, newline="") as fh:
        return [row for row in csv.DictReader(fh) if row["table"] in tables]


def _target_section(target):
    """What of the three analysis data files shapes `target`, as one YAML file (its path).

    A table reads its layout, its targets.yaml entry and its `paper_table`'s rows of
    paper_numbers.csv; a figure its `figures:` layout, its entry, and the paper tables named
    by its name's prefix (`fig7` for fig7_data_size, as analysis.figures/plots read them)
    and by its `paper_points`.
    """
    with open(LAYOUTS_FILE) as fh:
        layouts = yaml.safe_load(fh)
    if target in TABLES:
        layout = layouts.get(target)
        tables = {(layout or {}).get("paper_table")}
    else:
        layout = (layouts.get("figures") or {}).get(target)
        tables = {target.split("_")[0]} | {p.get("table") for p in ((layout or {}).get("paper_points") or {}).values()}
    section = {"layout": layout, "target": TARGETS[target], "paper_numbers": _paper_rows(tables)}
    return _write_if_changed(f"{SECTIONS_DIR}/{target}.yaml", yaml.safe_dump(section, sort_keys=True))


SECTIONS = {t: _target_section(t) for t in TARGETS}

with open(TEMPLATES_FILE) as _f:
    _TEMPLATE_SETS = json.load(_f)


def text_inputs(experiment, dataset):
    """The class list of `dataset` and the prompt-template set of `experiment` (its own small
    file): what shapes the text embeddings a training or an evaluation computes. A literal
    template list in the config is already part of the experiment's config hash."""
    out = []
    classes = CLASSES_DIR / f"{dataset}.json"
    if classes.exists():  # referring datasets have no class list
        out.append(str(classes))
    name = resolved(experiment)["model"]["prompt_templates"]
    if isinstance(name, str) and name in _TEMPLATE_SETS:
        out.append(_write_if_changed(f"{SECTIONS_DIR}/templates/{name}.json",
                                     json.dumps(_TEMPLATE_SETS[name], indent=1) + "\n"))
    return out
