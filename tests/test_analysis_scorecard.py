"""Verdicts and the scorecard on hand-made results: intervals, borrowed spreads, differences, files."""
from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from analysis import aggregate as agg
from analysis import scorecard as S
from analysis import tables as T
from analysis import verdicts as V
from analysis_fixtures import classes_of, write_eval
from fisa.config import load_config

REPO = Path(__file__).resolve().parents[1]
SETTINGS = V.Settings(tolerance_points=0.5, tolerance_relative=0.1, confidence=0.95, miou_rule="mIoU_gt_classes")
T_975_2DF = 4.302652729911275   # Student t, 97.5 % quantile, 2 degrees of freedom (printed tables: 4.303)


def _metrics(tmp_path, results):
    """results: {(experiment, seed, dataset): {metric: value}} -> tidy metrics."""
    paths = [write_eval(tmp_path, e, s, d, m) for (e, s, d), m in results.items()]
    return agg.aggregate("small", paths, classes_of=classes_of)[0]


@pytest.fixture
def table3a(tmp_path):
    """Baseline, + SEVE, FISA with 3 seeds; full fine-tune with 1 seed."""
    res = {}
    for seed, (b, s, f) in enumerate([(9.0, 18.0, 27.0), (10.0, 19.5, 27.6), (9.5, 18.6, 27.9)]):
        res[("baseline", seed, "ade150")] = {"PQ": b}
        res[("seve", seed, "ade150")] = {"PQ": s}
        res[("fisa", seed, "ade150")] = {"PQ": f}
    res[("seve_full_finetune", 0, "ade150")] = {"PQ": 12.0}
    return _metrics(tmp_path, res)


def _judge(metrics, target, settings=SETTINGS, closeness=None):
    layout = T.load_layout(target)
    paper = T.load_paper_numbers()
    key = layout["paper_table"]
    rows = V.judge_layout(key, layout, lambda r, c: T.paper_value(paper, key, r, c), metrics, settings, closeness)
    return {(r["row"], r["column"]): r for r in rows}


@pytest.mark.parametrize("values", [[1.0, 2.0], [9.0, 10.0, 9.5], [3.1, 2.7, 3.3, 2.9, 3.8, 3.0]])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_t_interval_matches_scipy(values, confidence):
    s = V.t_interval(values, confidence)
    sem = stats.sem(values)
    lo, hi = stats.t.interval(confidence, len(values) - 1, loc=sum(values) / len(values), scale=sem)
    assert (s.ci_low, s.ci_high) == pytest.approx((lo, hi), abs=1e-12)
    assert s.std == pytest.approx(pd.Series(values).std(ddof=1)) and s.n == len(values)


def test_t_interval_hand_value_and_degenerate_cases():
    s = V.t_interval([9.0, 10.0, 9.5], 0.95)    # mean 9.5, std 0.5, sem 0.5/sqrt(3)
    assert s.ci_high - s.mean == pytest.approx(T_975_2DF * 0.5 / math.sqrt(3))
    one = V.t_interval([4.0], 0.95)
    assert one.n == 1 and one.mean == 4.0 and math.isnan(one.std) and not one.has_interval
    assert V.t_interval([], 0.95).n == 0 and V.t_interval([float("nan"), 2.0, 4.0], 0.95).n == 2


def test_verdict_uses_the_tolerance_on_both_sides():
    s = V.Stats(10.0, 1.0, 3, 9.0, 11.0, 2)
    assert V.verdict(11.4, s, 0.5) == "reproduced" and V.verdict(8.6, s, 0.5) == "reproduced"
    assert V.verdict(11.6, s, 0.5) == "below"      # the paper is higher: ours is below it
    assert V.verdict(8.4, s, 0.5) == "above"
    assert V.verdict(11.6, s, 1.0) == "reproduced"
    assert V.verdict(10.0, V.Stats(10.0, math.nan, 1, math.nan, math.nan), 0.5) == "inconclusive"
    # efficiency columns (dataset "*") use a share of the paper's value
    assert SETTINGS.tolerance({"dataset": "*"}, 45.0) == pytest.approx(4.5)
    assert SETTINGS.tolerance({"dataset": "ade150"}, 45.0) == 0.5


def test_cells_own_spread_and_borrowed_spread(table3a):
    j = _judge(table3a, "table3a_components")
    base = j[("Baseline", "ADE150 PQ")]
    assert base["n"] == 3 and base["mean"] == pytest.approx(9.5) and base["std"] == pytest.approx(0.5)
    assert base["ci_low"] == pytest.approx(9.5 - T_975_2DF * 0.5 / math.sqrt(3))
    assert base["verdict"] == "reproduced" and "3 seeds" in base["basis"]        # paper 9.6
    # n = 1: the spread of the closest experiment of the table with n >= 3 (layout order: + SEVE)
    ft = j[("+ SEVE + full fine-tune", "ADE150 PQ")]
    seve_std = pd.Series([18.0, 19.5, 18.6]).std(ddof=1)
    assert ft["n"] == 1 and ft["std"] == pytest.approx(seve_std)
    assert ft["ci_high"] == pytest.approx(12.0 + T_975_2DF * seve_std)          # t with the lender's 2 df, sem = std
    assert "borrowed from seve" in ft["basis"]
    # paper 14.9 vs 12.0 + 4.30 * 0.755 = 15.25: reproduced; with a tighter lender it would be below
    assert ft["verdict"] == "reproduced"
    assert ft["metric_read"] == "PQ" and ft["commit"].startswith("0123456789")


def test_closeness_from_the_config_picks_the_most_similar_lender(table3a):
    config = load_config(REPO / "config.yaml")
    closeness = V.config_closeness(config, "small")
    assert closeness("seve_full_finetune", "seve") < closeness("seve_full_finetune", "baseline")
    j = _judge(table3a, "table3a_components", closeness=closeness)
    assert "borrowed from seve" in j[("+ SEVE + full fine-tune", "ADE150 PQ")]["basis"]


def test_one_seed_without_lender_is_inconclusive(tmp_path):
    m = _metrics(tmp_path, {("lora_r64", 0, "ade150"): {"PQ": 20.0}, ("fisa", 0, "ade150"): {"PQ": 27.0},
                            ("fisa", 1, "ade150"): {"PQ": 28.0}})
    j = _judge(m, "table3b_lora")
    assert j[("LoRA rank 64", "ADE150 PQ")]["verdict"] == "inconclusive"
    assert "no experiment of this table has n>=3" in j[("LoRA rank 64", "ADE150 PQ")]["basis"]
    assert j[("LoRA rank 256", "ADE150 PQ")]["basis"] == "no result"
    # two seeds: its own (wide) interval, t with 1 df
    fisa = j[("SIMO (FISA)", "ADE150 PQ")]
    assert fisa["ci_high"] == pytest.approx(27.5 + stats.t.ppf(0.975, 1) * math.sqrt(0.5) / math.sqrt(2))


def test_a_cpu_measurement_of_a_gpu_figure_is_shown_not_judged(tmp_path):
    """Table 2's FPS, memory and GPU hours (layout `gpu_measure`) measured only on a CPU are
    'inconclusive: not comparable' (the paper's are GPU figures); on a GPU they are judged, and the
    device-independent columns (iterations) are judged either way."""
    from analysis_fixtures import write_efficiency

    def judged(device, train_device):
        path = write_efficiency(tmp_path / device, "fisa_main", {"FPS": 2.6, "memory_GB": 10.0, "gpu_hours": 45.0,
                                                                 "iterations": 25000}, device=device,
                                train_device=train_device)
        seeds = [write_efficiency(tmp_path / device, "fisa_main", {"FPS": 2.7, "memory_GB": 10.4, "gpu_hours": 44.0,
                                                                   "iterations": 25000}, device=device, name=f"s{k}",
                                  seed=k, train_device=train_device) for k in (1, 2)]
        return _judge(agg.aggregate("small", [], [path, *seeds], classes_of=classes_of)[0], "table2_efficiency")

    cpu = judged("CPU: AMD EPYC 7B13 (2 threads)", "CPU: AMD EPYC 7B13 (2 threads)")
    for column in ("FPS", "memory GB", "GPU hours"):
        assert cpu[("FISA", column)]["verdict"] == "inconclusive", column
        assert cpu[("FISA", column)]["basis"].startswith("measured on CPU: AMD EPYC 7B13 (2 threads), not on a GPU")
    assert cpu[("FISA", "iterations (K)")]["verdict"] == "reproduced"   # 25k either way
    gpu = judged("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB")
    assert gpu[("FISA", "FPS")]["verdict"] == "reproduced" and gpu[("FISA", "GPU hours")]["verdict"] == "reproduced"
    assert gpu[("FISA", "memory GB")]["basis"].startswith("3 seeds")


def test_differences_paired_by_seed_and_unpaired(table3a):
    j = _judge(table3a, "table3a_components")
    d = j[("+ SEVE - Baseline", "ADE150 PQ")]
    per_seed = [18.0 - 9.0, 19.5 - 10.0, 18.6 - 9.5]                               # 9.0, 9.5, 9.1
    assert d["paper"] == pytest.approx(18.9 - 9.6) and d["kind"] == "difference"
    assert d["mean"] == pytest.approx(sum(per_seed) / 3) and d["n"] == 3
    assert (d["ci_low"], d["ci_high"]) == pytest.approx(
        stats.t.interval(0.95, 2, loc=sum(per_seed) / 3, scale=stats.sem(per_seed)))
    assert d["verdict"] == "reproduced" and "paired" in d["basis"]
    # one seed against three: Welch, the one-seed side with its borrowed spread
    u = j[("+ SEVE + full fine-tune - Baseline", "ADE150 PQ")]
    s_ft, s_b = pd.Series([18.0, 19.5, 18.6]).std(ddof=1), 0.5
    va, vb = s_ft ** 2 / 1, s_b ** 2 / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert u["mean"] == pytest.approx(12.0 - 9.5) and u["std"] == pytest.approx(math.sqrt(va + vb))
    assert u["ci_high"] - u["mean"] == pytest.approx(stats.t.ppf(0.975, df) * math.sqrt(va + vb))
    assert u["paper"] == pytest.approx(5.3) and "Welch" in u["basis"]
    assert u["ci_high"] == pytest.approx(5.33, abs=0.01)   # 2.5 + t(2.57 df) 3.50 x 0.808
    assert u["verdict"] == "reproduced"                     # paper +5.3 inside [.., 5.33 + 0.5]


def test_miou_rule_reads_the_configured_convention_only_where_recorded(tmp_path):
    m = _metrics(tmp_path, {
        **{("clip_vit_b16", s, "ade150"): {"PQ": 25.0 + s, "mIoU": 34.0, "mIoU_gt_classes": 34.0,
                                           "mIoU_gt_or_pred_classes": 30.0 + s} for s in range(3)},
        ("baseline", 0, "refcoco"): {"mIoU": 21.0, "oIoU": 23.9}})
    old = V.Settings(0.5, 0.1, 0.95, "mIoU_gt_or_pred_classes")
    j = _judge(m, "table3e_backbones", settings=old)
    assert j[("ViT-B-16", "ADE150 mIoU")]["mean"] == pytest.approx(31.0)
    assert j[("ViT-B-16", "ADE150 mIoU")]["metric_read"] == "mIoU_gt_or_pred_classes"
    assert _judge(m, "table3e_backbones")[("ViT-B-16", "ADE150 mIoU")]["mean"] == pytest.approx(34.0)
    ref = _judge(m, "table3f_refcoco", settings=old)[("without FISA", "RefCOCO oIoU")]
    assert ref["metric_read"] == "oIoU" and ref["mean"] == pytest.approx(23.9)


def test_scorecard_has_every_paper_number_and_the_headline(table3a):
    card = S.build_scorecard(table3a, "small", SETTINGS)
    assert list(card.columns[:11]) == S.COLUMNS
    paper = T.load_paper_numbers()
    cells = card[card.kind != "difference"]
    assert set(zip(cells.table, cells.row, cells.column)) == set(zip(paper.table, paper.row, paper.column))
    assert len(cells) == len(paper)
    assert set(card.verdict) <= set(V.VERDICTS)
    quoted = card[card.kind == "quoted"]
    assert (quoted.verdict == "inconclusive").all() and "MAFT+" in set(quoted.row)
    # Tab. 3a: 4 cells reproduced (Baseline 9.5, + SEVE 18.7, full fine-tune borrowed, FISA 27.5)
    t3a = card[(card.table == "table3a") & (card.kind == "cell")]
    assert list(t3a.verdict) == ["reproduced"] * 4
    ours = card[card.kind == "cell"]
    assert S.headline(card) == f"{(ours.verdict == 'reproduced').sum()} of {len(ours)} paper numbers reproduced"
    # Fig. 2a's gap is one of the paper's numbers, judged as a difference of two experiments
    gap = card[(card.table == "fig2a") & (card.row == "oracle classifier - oracle generator")]
    assert len(gap) == 2 and set(gap.kind) == {"cell"}


def test_scorecard_cli_writes_csv_markdown_pdf_html(table3a, tmp_path):
    mcsv = tmp_path / "metrics.csv"
    main = _metrics(tmp_path / "main", {("fisa_main", s, "ade150"): {"PQ": 20.0 + s} for s in range(3)})
    agg.write_csv(pd.concat([table3a, main]), mcsv)
    out = tmp_path / "reproduction"
    S.main(["--preset", "small", "--config", str(REPO / "config.yaml"), "--metrics", str(mcsv),
            "--out-csv", str(out / "scorecard.csv"), "--out-md", str(out / "scorecard.md"),
            "--out-pdf", str(out / "scorecard.pdf"), "--out-html", str(out / "scorecard.html")])
    card = pd.read_csv(out / "scorecard.csv")
    assert list(card.columns[:11]) == S.COLUMNS
    md = (out / "scorecard.md").read_text()
    head = S.headline_of_csv(out / "scorecard.csv")
    assert md.splitlines()[2] == f"**{head}**" and head.endswith("paper numbers reproduced")
    assert "| table3a | 4 | 4 | 0 | 0 | 0 | 3 of 3 |" in md
    # fisa_main: 21.0 ± 1.0 (n=3) against the paper's 28.1 in Tables 1, 2 and 4
    assert "| table1 | FISA | ADE150 PQ | 28.1 | 21.0 ± 1.0, n=3 | -7.1 | [18.5, 23.5] | below < |" in md
    assert "## Below or above the paper (3)" in md
    assert "mIoU_gt_classes" in md and "f3c1bc1" in md
    # the sensitivity line: the same verdicts at 1x, monotone in the tolerance
    cells = card[card.kind == "cell"]
    assert S.reproduced_at(cells, 1) == int((cells.verdict == "reproduced").sum())
    assert S.reproduced_at(cells, 0) <= S.reproduced_at(cells, 1) <= S.reproduced_at(cells, 2)
    assert f"{S.reproduced_at(cells, 0)} reproduced at 0x" in md
    assert (out / "scorecard.pdf").read_bytes().startswith(b"%PDF")
    html = (out / "scorecard.html").read_text()
    assert f"<strong>{head}</strong>" in html and "<table>" in html


def test_missing_analysis_settings_name_the_key():
    config = load_config(REPO / "config.yaml")
    del config["presets"]["small"]["analysis"]
    with pytest.raises(ValueError, match=r"presets.small.analysis.*missing"):
        V.Settings.from_config(config, "small")


def test_tables_mark_each_cell_with_the_legend_in_the_caption(table3a, tmp_path):
    table = T.build_table("table3a_components", table3a, "small", settings=SETTINGS)
    assert table.line("Baseline", "Δ").cells == ["-0.1 ≈"]
    assert table.line("+ SEVE + full fine-tune", "95 %").cells[0].endswith("]*")     # borrowed spread
    assert table.line("Baseline", "95 %").cells == [f"[{9.5 - T_975_2DF * 0.5 / 3 ** 0.5:.1f}, "
                                                     f"{9.5 + T_975_2DF * 0.5 / 3 ** 0.5:.1f}]"]
    assert "≈ reproduced" in table.caption and "? inconclusive" in table.caption
    tex = T.to_latex(table)
    assert tex.isascii() and r"-0.1 $\approx$ \\" in tex and r"$<$ below the paper" in tex
    # without settings (no --config) the table is as before: no interval line, no marks
    plain = T.build_table("table3a_components", table3a, "small")
    assert plain.line("Baseline", "Δ").cells == ["-0.1"]
    with pytest.raises(KeyError):
        plain.line("Baseline", "95 %")


@pytest.mark.skipif(shutil.which("snakemake") is None and not (Path(sys.executable).parent / "snakemake").exists(),
                    reason="snakemake not installed")
def test_dry_run_of_all_tables_plans_the_scorecard(tmp_path):
    """`snakemake -n all_tables --config preset=small` plans the scorecard (in a scratch work dir)."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                          "-n", "all_tables", "--config", "preset=small"], capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    counts = dict(ln.split()[:2] for ln in res.stdout.splitlines()
                  if len(ln.split()) == 2 and ln.split()[1].isdigit())
    assert counts["scorecard"] == "1"
    assert "results/small/reproduction/scorecard.csv" in res.stdout
    # the seed spread: 28 trainings + 10 (5 experiments x seeds 1, 2), 48 evaluations + 10 (ADE-150 only);
    # the fidelity sensitivity (small preset): 11 trainings + 14 evaluations (3 reuse fisa's weights)
    assert counts["train"] == "49" and counts["evaluate"] == "72"


@pytest.mark.parametrize("target", S.table_targets())
def test_every_table_renders_with_intervals_and_marks(table3a, target, tmp_path):
    from analysis_fixtures import write_efficiency

    eff = agg.aggregate("small", [], [write_efficiency(tmp_path, "fisa_main", {"FPS": 2.5, "memory_GB": 9.0}),
                                      write_efficiency(tmp_path, "fisa_main", {"FPS": 20.0, "memory_GB": 1.0},
                                                       device="cpu", name="other", seed=1)],
                        classes_of=classes_of)[0]                    # two devices: never pooled
    table = T.build_table(target, pd.concat([table3a, eff]), "small", settings=SETTINGS)
    tex = T.to_latex(table)
    assert tex.isascii() and "Student-t interval" in tex.replace("\\", "")
    n_repro = sum(ln.source.startswith("reproduced") for ln in table.lines)
    assert sum(ln.source == T.SOURCE_INTERVAL for ln in table.lines) == n_repro


def test_scorecard_rows_carry_the_dataset_checksum_of_their_dataset(tmp_path):
    """Every number's provenance holds the checksum of the split it was evaluated on, per dataset."""
    sums = {"ade150": "sha256:" + "a" * 64, "coco": "sha256:" + "c" * 64}
    paths = [write_eval(tmp_path, "fisa_main", s, d, {"PQ": 20.0 + s, "mIoU": 30.0 + s},
                        provenance={"dataset_checksum": sums[d], "checkpoint_sha256": "f" * 64})
             for s in range(3) for d in sums]
    metrics = agg.aggregate("small", paths, classes_of=classes_of)[0]
    card = S.build_scorecard(metrics, "small", SETTINGS)
    main = card[(card.table == "table1") & (card.row == "FISA")]
    for d, col in (("ade150", "ADE150 PQ"), ("coco", "COCO PQ")):
        assert main[main.column == col].dataset_checksum.tolist() == [sums[d]]
    md = S.to_markdown(card, "small", SETTINGS)
    assert "| fisa_main | ade150 | " in md and "| " + "a" * 12 + " |" in md and "| " + "c" * 12 + " |" in md
