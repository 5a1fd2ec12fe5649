# Inputs that shape an output besides the config: the analysis data files (layouts, targets,
# paper numbers), class lists and prompt templates. Each rule lists, as inputs, small files
# holding exactly its share of them, so an edit reruns exactly what it shapes and nothing
# else. The files are written by local rules (`target_section`, `template_set`) whose params
# trigger is their content: nothing is written while the DAG is parsed. analysis.smk,
# evaluate.smk and train.smk use `SECTIONS` / `text_inputs`.
import json

from fisa.utils.io import atomic_write_text

SECTIONS_DIR = ".snakemake/fisa/sections"
LAYOUTS_FILE = REPO / "analysis/layouts.yaml"
PAPER_NUMBERS_FILE = REPO / "analysis/paper_numbers.csv"
TEMPLATES_FILE = REPO / "fisa/models/prompt_templates.json"
CLASSES_DIR = REPO / "fisa/data/classes"


def _paper_rows(tables):
    import csv

    with open(PAPER_NUMBERS_FILE, newline="") as fh:
        return [row for row in csv.DictReader(fh) if row["table"] in tables]


def _target_section(target):
    """What of the three analysis data files shapes `target` (the content of its section file).

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
    return {"layout": layout, "target": TARGETS[target], "paper_numbers": _paper_rows(tables)}


# what a table/figure rule lists as its `section` input (rule `target_section` writes it)
SECTIONS = {t: f"{SECTIONS_DIR}/{t}.yaml" for t in TARGETS}


def projection_of(table):
    """The experiment whose FLOPs projection `table` cites (its layout's `projection`), or None:
    the table rule then reads that experiment's shape rehearsal (budget.smk)."""
    with open(LAYOUTS_FILE) as fh:
        layout = yaml.safe_load(fh).get(table) or {}
    return (layout.get("projection") or {}).get("experiment")

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
        out.append(f"{SECTIONS_DIR}/templates/{name}.json")
    return out


def _template_text(name):
    return json.dumps(_TEMPLATE_SETS[name], indent=1) + "\n"


def _section_text(target):
    return yaml.safe_dump(_target_section(target), sort_keys=True)


localrules:
    target_section,
    template_set,


rule target_section:
    """One table/figure's share of layouts.yaml, targets.yaml and paper_numbers.csv (rewritten
    only when that share changes: the params trigger holds its content)."""
    output:
        f"{SECTIONS_DIR}/{{target}}.yaml",
    wildcard_constraints:
        target="|".join(sorted((re.escape(t) for t in TARGETS), key=len, reverse=True)),
    params:
        content=lambda wc: hashlib.sha256(_section_text(wc.target).encode()).hexdigest()[:16],
    run:
        atomic_write_text(output[0], _section_text(wildcards.target))


rule template_set:
    """One prompt-template set of fisa/models/prompt_templates.json (rewritten only when it changes)."""
    output:
        f"{SECTIONS_DIR}/templates/{{name}}.json",
    wildcard_constraints:
        name="|".join(sorted((re.escape(n) for n in _TEMPLATE_SETS), key=len, reverse=True)),
    params:
        content=lambda wc: hashlib.sha256(_template_text(wc.name).encode()).hexdigest()[:16],
    run:
        atomic_write_text(output[0], _template_text(wildcards.name))
