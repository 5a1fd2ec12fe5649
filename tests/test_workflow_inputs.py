"""Every input that shapes an output is an input of its rule (layouts, targets, paper numbers,
class lists, prompt templates), so an edit reruns exactly what it shapes; aggregation,
tables and figures are local rules; re-made data do not rerun what read them.

Real runs use the stand-in entry points of tests/workflow_fakes in a temporary copy."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_workflow import job_counts, snakemake, workflow_copy  # noqa: E402

TARGETS = ("table3c_adapter_layers", "fig2a_oracle")


def _plan(copy, *extra):
    res = snakemake(copy, "-n", "--cores", "1", *TARGETS, *extra, "--config", "preset=small")
    assert res.returncode == 0, res.stdout[-3000:]
    if "Nothing to be done" in res.stdout:
        return {}
    counts = job_counts(res.stdout)
    counts.pop("total")
    return counts


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    copy = workflow_copy(tmp_path_factory.mktemp("inputs"), fakes=True)
    res = snakemake(copy, "--cores", "2", *TARGETS, "--config", "preset=small")
    assert res.returncode == 0, res.stdout[-3000:]
    assert _plan(copy) == {}
    return copy


def _replace(path: Path, old: str, new: str):
    text = path.read_text()
    assert text.count(old) >= 1, old
    path.write_text(text.replace(old, new, 1))


@pytest.mark.slow  # one real run with stand-ins and six dry-runs (about 1 min on 2 idle cores)
def test_each_edit_reruns_exactly_what_it_shapes(built):
    copy = built
    # the run wrote each target's section through the rule `target_section`
    assert sorted(p.stem for p in (copy / ".snakemake/fisa/sections").glob("*.yaml")) == sorted(TARGETS)
    layouts, paper = copy / "analysis/layouts.yaml", copy / "analysis/paper_numbers.csv"
    # A table's layout entry: only that table (not its aggregation, not the figure), after its
    # section file (rule target_section, rerun by its params: the section's content).
    _replace(layouts, 'title: "Distribution Adapter', 'title: "Edited Distribution Adapter')
    assert _plan(copy) == {"target_section": 1, "table3c_adapter_layers": 1}
    # Another table's layout, one not asked for: nothing more.
    _replace(layouts, 'title: "Open-vocabulary panoptic', 'title: "Edited open-vocabulary panoptic')
    assert _plan(copy) == {"target_section": 1, "table3c_adapter_layers": 1}
    # A figure's layout entry: that figure too.
    _replace(layouts, 'oracle_generator: "oracle generator"', 'oracle_generator: "oracle mask generator"')
    assert _plan(copy) == {"target_section": 2, "table3c_adapter_layers": 1, "fig2a_oracle": 1}
    # A paper number of another table (Table 1): nothing more; the figure's own (fig2a) is already planned.
    lines = paper.read_text().splitlines()
    i = next(k for k, l in enumerate(lines) if l.startswith("table1,"))
    lines[i] = lines[i].rsplit(",", 1)[0] + ",99.9"
    paper.write_text("\n".join(lines) + "\n")
    assert _plan(copy) == {"target_section": 2, "table3c_adapter_layers": 1, "fig2a_oracle": 1}
    # The class list of a dataset these targets do not evaluate on: nothing more.
    classes = copy / "fisa/data/classes/pc59.json"
    classes.write_text(classes.read_text() + " ")
    assert _plan(copy) == {"target_section": 2, "table3c_adapter_layers": 1, "fig2a_oracle": 1}
    # ADE-150's class list: every evaluation on ADE-150 and what reads them; no training.
    classes = copy / "fisa/data/classes/ade150.json"
    data = json.loads(classes.read_text())
    data["classes"][0]["names"] = data["classes"][0]["names"] + ["edited synonym"]
    classes.write_text(json.dumps(data))
    plan = _plan(copy)
    # Table 3c: adapter_0/1/3 + fisa x 3 seeds; Fig. 2a: baseline x 3 seeds + 2 oracles (the seed spread)
    assert "train" not in plan and plan["evaluate"] == 11, plan
    assert plan["aggregate_table3c_adapter_layers"] == plan["aggregate_fig2a_oracle"] == 1


@pytest.mark.slow
def test_re_made_data_do_not_rerun_what_read_them(built):
    # re-making the data adds that one job to whatever the copy already plans (the edits of the
    # test above leave evaluations planned for their own reasons: those stay, nothing is added)
    before = _plan(built)
    assert _plan(built, "--forcerun", "synthetic_data") == {**before, "synthetic_data": 1}


@pytest.mark.slow
def test_a_rewritten_config_or_re_made_data_still_plans_a_missing_run(built):
    """snakemake/snakemake#4166 on our DAG (workflow/rules/snakemake_fixes.smk): an edit of config.yaml
    rewrites the effective config, an ancient() input of fetch_checkpoint; re-made data rewrite a
    marker, an ancient() input of train. A requested run that is missing must still be planned in
    the same invocation (without the fix only effective_config / synthetic_data were, exit 0)."""
    target = "results/small/runs/adapter_1/seed0/done.json"
    done = built / target
    aside = done.with_name("done.json.aside")
    config = built / "config.yaml"
    original = config.read_text()

    def plan(*extra):
        res = snakemake(built, "-n", "--cores", "1", target, *extra, "--config", "preset=small")
        assert res.returncode == 0, res.stdout[-3000:]
        return {} if "Nothing to be done" in res.stdout else job_counts(res.stdout)

    assert plan() == {}
    done.rename(aside)
    try:
        assert plan() == {"train": 1, "total": 1}
        # an experiment this run does not read
        _replace(config, "lora_r64: {variant: lora, model: {lora_rank: 64}",
                 "lora_r64: {variant: lora, model: {lora_rank: 48}")
        assert plan() == {"effective_config": 1, "train": 1, "total": 2}
        config.write_text(original)
        assert plan("--forcerun", "synthetic_data") == {"synthetic_data": 1, "train": 1, "total": 2}
    finally:
        config.write_text(original)
        aside.rename(done)
    assert plan() == {}

def test_parsing_the_workflow_writes_no_file(tmp_path):
    """The section files are made by local rules, not while the DAG is parsed: a dry-run writes none."""
    copy = workflow_copy(tmp_path, fakes=True)
    counts = _plan(copy)
    assert counts["target_section"] == len(TARGETS) and counts["template_set"] >= 1
    assert not (copy / ".snakemake/fisa").exists()


def test_aggregation_tables_and_figures_are_local_rules(tmp_path):
    """With --profile slurm they run in the main Snakemake process, not as SLURM jobs."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    copy = workflow_copy(tmp_path)
    with SnakemakeApi(OutputSettings()) as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=copy / "Snakefile", workdir=copy,
                          config_settings=ConfigSettings(config={"preset": "small"}))._workflow
        local = set(wf._localrules)
        names = {r.name for r in wf.rules}
    analysis = {n for n in names if n.startswith(("aggregate", "table", "fig", "qualitative"))}
    assert len(analysis) > 20 and analysis <= local
    assert not local & {"train", "evaluate", "efficiency", "train_generator", "fetch_checkpoint", "synthetic_data"}
    assert {"target_section", "template_set", "run_config", "effective_config"} <= local
