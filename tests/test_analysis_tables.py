"""Golden tests of the rendered tables: cells, differences, placeholders, devices."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis import aggregate as agg
from analysis import tables as T
from analysis_fixtures import classes_of, write_efficiency, write_eval


def _metrics(paths, eff=()):
    return agg.aggregate("small", paths, eff, classes_of=classes_of)[0]


@pytest.fixture
def table1_metrics(tmp_path):
    paths = [write_eval(tmp_path, "fisa_main", 0, "ade150", {"PQ": 27.0, "mIoU": 36.0}),
             write_eval(tmp_path, "fisa_main", 1, "ade150", {"PQ": 29.0, "mIoU": 37.0}),
             write_eval(tmp_path, "fisa_main", 0, "coco", {"PQ": 50.0, "mIoU": 60.0}),
             write_eval(tmp_path, "baseline", 0, "ade150", {"PQ": 9.0, "mIoU": 20.0})]
    return _metrics(paths)


def test_paper_numbers_hold_spec_values():
    paper = T.load_paper_numbers()
    expect = {("table1", "FISA", "ADE150 PQ"): 28.1, ("table1", "FC-CLIP", "Mapillary mIoU"): 27.9,
              ("table1", "OVSeg", "PC459 mIoU"): 15.7, ("table2", "MAFT+", "GPU hours"): 224,
              ("table2", "FISA", "memory GB"): 10.2, ("table2", "FISA", "trainable params (M)"): 26,
              ("table3a", "+ SEVE + full fine-tune", "ADE150 PQ"): 14.9,
              ("table3b", "LoRA rank 64", "ADE150 PQ"): 25.9, ("table3c", "3 layers", "ADE150 PQ"): 27.2,
              ("table3d", "+ adapt mask generator", "ADE150 PQ"): 21.9,
              ("table3e", "EVA01-g-14-plus", "ADE150 mIoU"): 36.4, ("table3f", "with FISA", "RefCOCO+ oIoU"): 25.9,
              ("table4", "ResNet-50", "ADE847 mIoU"): 15.8, ("fig2a", "oracle classifier", "mIoU"): 60.5,
              ("fig2a", "oracle classifier - oracle generator", "PQ"): 12.7,
              ("fig3", "seve - baseline", "max IoU gain"): 13.7,
              ("fig7", "FISA - MAFT+", "PQ at 100 iterations"): 22.6,
              ("fig7", "FISA - MAFT+", "PQ at 0.1% data"): 10.1}
    for (table, row, col), value in expect.items():
        assert T.paper_value(paper, table, row, col) == pytest.approx(value), (table, row, col)
    # Table 1 has 10 methods x 9 columns minus the 33 cells the paper leaves blank
    assert (paper.table == "table1").sum() == 90 - 33
    assert T.paper_value(paper, "table1", "FreeSeg", "ADE847 mIoU") is None


SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "SPEC.md"


@pytest.mark.skipif(not SPEC.exists(), reason="the team's SPEC.md is not beside the checkout")
def test_paper_numbers_match_every_markdown_table_of_spec():
    """Independent reference: re-read Tables 1, 2 and 4 from SPEC.md's Markdown tables."""
    paper = T.load_paper_numbers()
    text = SPEC.read_text().split("### ")
    sections = {"table1": "Table 1", "table2": "Table 2", "table4": "Table 4"}
    rename = {"inference FPS": "FPS", "inference memory GB": "memory GB", "train GPU hours": "GPU hours",
              "train iterations (K)": "iterations (K)"}
    checked = 0
    for key, title in sections.items():
        block = next(b for b in text if b.startswith(title))
        rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in block.splitlines() if ln.startswith("|")]
        header = [rename.get(h, h) for h in rows[0]]
        for row in rows[2:]:
            for col, cell in zip(header[1:], row[1:]):
                expected = None if cell == "-" else float(cell)
                assert T.paper_value(paper, key, row[0], col) == expected, (key, row[0], col)
                checked += 1
    assert checked == 90 + 24 + 15


def test_table1_cells_differences_and_placeholders(table1_metrics):
    table = T.build_table("table1_main", table1_metrics, "small")
    ours = table.line("FISA", "reproduced")
    col = table.columns.index("ADE150 PQ")
    assert ours.cells[col] == "28.0 ± 1.4"       # mean 28, sample std sqrt(2)
    assert ours.n[col] == 2 and ours.source == "reproduced (n=1–2)"
    assert table.line("FISA", "paper").cells[col] == "28.1"
    assert table.line("FISA", "Δ").cells[col] == "-0.1"
    assert table.line("FISA", "Δ").cells[table.columns.index("COCO mIoU")] == "-7.1"
    assert ours.cells[table.columns.index("PC59 mIoU")] == T.MISSING
    assert table.line("FISA", "Δ").cells[table.columns.index("PC59 mIoU")] == T.NOT_REPORTED
    odise = table.line("ODISE", T.SOURCE_PAPER_ONLY)
    assert odise.cells[table.columns.index("Mapillary mIoU")] == T.NOT_REPORTED
    base = table.line("Frozen baseline (ours)", "reproduced")
    assert base.cells[col] == "9.0" and base.source == "reproduced (n=1)"
    # every layout row is there, in order, even when nothing was reproduced
    assert [ln.label for ln in table.lines if ln.label] == [r["label"] for r in T.load_layout("table1_main")["rows"]]


def test_table1_latex_and_markdown(table1_metrics, tmp_path):
    mcsv = tmp_path / "metrics.csv"
    agg.write_csv(table1_metrics, mcsv)
    T.main(["--target", "table1_main", "--preset", "small", "--metrics", str(mcsv),
            "--out-tex", str(tmp_path / "t.tex"), "--out-md", str(tmp_path / "t.md"),
            "--out-html", str(tmp_path / "t.html")])
    html = (tmp_path / "t.html").read_text()
    assert "<td>FISA</td><td>reproduced (n=1–2)</td><td>50.0</td><td>60.0</td><td>28.0 ± 1.4</td>" in html
    assert "<td><em>missing</em></td>" in html and "<td>MAFT+</td><td>reported by the paper</td>" in html
    tex = (tmp_path / "t.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\label{tab:table1_main}" in tex
    assert r"FISA & reproduced (n=1--2) & 50.0 & 60.0 & 28.0 $\pm$ 1.4 & 36.5 $\pm$ 0.7 & \textit{missing}" in tex
    assert r" & $\Delta$ (ours $-$ paper) & -6.4 & -7.1 & -0.1 & -0.3 & - & - & - & - & - \\" in tex
    assert r"MAFT+ & reported by the paper & - & - & 27.1 & 36.1 & - & - & 15.1 & 59.4 & 21.6 \\" in tex
    assert "Preset: small" in tex
    assert tex.isascii()
    _check_latex_structure(tex, 11)
    md = (tmp_path / "t.md").read_text()
    assert "| FISA | reproduced (n=1–2) | 50.0 | 60.0 | 28.0 ± 1.4 | 36.5 ± 0.7 | **missing** |" in md
    assert "|  | paper | 56.4 | 67.1 | 28.1 | 36.8 | 19.0 | 29.7 | 16.1 | 62.4 | 23.6 |" in md
    assert "| SED | reported by the paper |" in md
    assert "fisa_main): commit 0123456789; config cfg0." in md
    assert md.rstrip().endswith("are in `results/small/metrics.csv`.")
    assert "`snakemake table1_main --config preset=small`" in md


@pytest.mark.parametrize("target", ["table1_main", "table2_efficiency", "table3a_components", "table3b_lora",
                                    "table3c_adapter_layers", "table3d_tuned_parameters", "table3e_backbones",
                                    "table3f_refcoco", "table4_mask_generators"])
def test_every_target_renders_with_no_results(target):
    empty = pd.DataFrame(columns=agg.METRIC_COLUMNS)
    table = T.build_table(target, empty, "paper")
    layout = T.load_layout(target)
    assert [ln.label for ln in table.lines if ln.label] == [r["label"] for r in layout["rows"]]
    for ln in table.lines:
        if ln.source.startswith("reproduced"):
            assert set(ln.cells) == {T.MISSING}
    assert T.MISSING in T.to_markdown(table) and r"\textit{missing}" in T.to_latex(table)
    _check_latex_structure(T.to_latex(table), len(table.columns) + 2)


def _check_latex_structure(tex: str, ncols: int):
    """No LaTeX here to compile: check what breaks a tabular (cell counts, braces, environments)."""
    import re

    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    rows = [r for r in body.splitlines() if r.strip() and r.strip() != r"\addlinespace"]
    for r in rows:
        assert r.endswith(r" \\"), r
        assert len(re.findall(r"(?<!\\)&", r)) == ncols - 1, r
    assert tex.count("{") - tex.count(r"\{") == tex.count("}") - tex.count(r"\}")
    for env in ("table", "tabular"):
        assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") == 1
    assert re.search(rf"\\begin{{tabular}}{{l{{2}}c{{{ncols - 2}}}}}", tex)


def test_table2_names_the_device_and_splits_mixed_devices(tmp_path):
    evals = [write_eval(tmp_path, "fisa_main", 0, "ade150", {"PQ": 28.0, "mIoU": 36.0})]
    eff = [write_efficiency(tmp_path, "fisa_main", {"FPS": 2.0, "memory_GB": 10.0, "gpu_hours": 40.0,
                                                    "iterations": 25000, "trainable_params": 26.4e6},
                            train_device="NVIDIA A100-SXM4-80GB")]
    table = T.build_table("table2_efficiency", _metrics(evals, eff), "small")
    assert table.notes[0] == "Inference (FPS, memory GB) measured on: NVIDIA H200."
    assert table.notes[1] == "Training (GPU hours, iterations (K)) measured on: NVIDIA A100-SXM4-80GB."
    ours = table.line("FISA", "reproduced")
    assert ours.source == "reproduced, NVIDIA H200 (n=1)"
    assert ours.cells == ["2.00", "10.0", "40.0", "25", "26.4", "28.0", "36.0"]
    assert table.line("FISA", "Δ").cells[:2] == ["-0.63", "-0.2"]
    assert table.line("FISA", "paper").cells[2] == "45"

    eff.append(write_efficiency(tmp_path, "fisa_main", {"FPS": 1.0}, device="NVIDIA A100", name="other", seed=1))
    table = T.build_table("table2_efficiency", _metrics(evals, eff), "small")
    assert "several devices (NVIDIA A100, NVIDIA H200)" in table.notes[0]
    fps = table.columns.index("FPS")
    assert table.line("FISA", "reproduced, NVIDIA A100").cells[fps] == "1.00"
    assert table.line("FISA", "reproduced, NVIDIA H200").cells[fps] == "2.00"   # never averaged to 1.50
    # numbers not measured per device are the same on both lines
    gpu = table.columns.index("GPU hours")
    assert table.line("FISA", "reproduced, NVIDIA A100").cells[gpu] == "40.0"
    assert table.line("FISA", "reproduced, NVIDIA H200").cells[gpu] == "40.0"
    assert "WARNING" in T.to_latex(table)


def test_table2_caption_says_which_precision_its_fps_and_memory_used(tmp_path):
    def efficiency(name, precision, seed=0):
        path = write_efficiency(tmp_path, "fisa_main", {"FPS": 2.0, "memory_GB": 10.0}, name=name, seed=seed)
        record = json.loads(path.read_text())
        if precision:
            record["provenance"]["precision"] = precision
        path.write_text(json.dumps(record))
        return path

    eff = [efficiency("a", "bf16")]
    assert T.build_table("table2_efficiency", _metrics([], eff), "small").caption.endswith(
        "FPS and memory GB measured in bf16 autocast.")
    eff = [efficiency("a", None)]
    assert T.build_table("table2_efficiency", _metrics([], eff), "small").caption.endswith(
        "FPS and memory GB: precision not recorded.")
    eff = [efficiency("a", "fp32"), efficiency("b", "bf16", seed=1)]
    table = T.build_table("table2_efficiency", _metrics([], eff), "small")
    assert table.caption.endswith("WARNING: FPS and memory GB measured in several precisions (bf16, fp32).")
    assert "several precisions" in T.to_markdown(table)
    # tables without efficiency columns say nothing about precision
    assert "precision" not in T.build_table("table1_main", _metrics([], eff), "small").caption


SHAPES_HEADER = ("experiment,variant,backbone,generator,params_total,params_trainable,train_step_flops,"
                 "test_image_flops,status,test_flops_by_dataset,activation_bytes,attention_matrix_bytes,batch_per_gpu\n")


def test_table2_cites_the_flops_projection_and_says_whether_a_gpu_measured_it(tmp_path):
    """The layout's `projection` (fisa_main): a line of projected FPS, GPU hours and iterations under
    FISA's row, computed from the shape rehearsal as fisa.bench.budget does, and a note that names the
    assumptions and says that no GPU measured FISA (CPU record) or that one did."""
    from fisa.config import load_config

    config = load_config()
    shapes = tmp_path / "fisa_main.csv"
    shapes.write_text(SHAPES_HEADER + 'fisa_main,fisa,vit_l14_336,swin_b,536000000,26300000,4.4e13,5.3e12,ok,'
                      '"{""ade150"": 5.0e12, ""coco"": 4.0e12}",2.0e11,1.6e11,4\n')
    projection = T.read_projection(shapes, "fisa_main", config, "paper")
    # independently: paper preset, 25k iterations x (16 / 4) x 4.4e13 FLOPs at 35 % of 312 TFLOP/s
    rate = 3.12e14 * 0.35
    assert projection.row["gpu_hours"] == pytest.approx(25000 * 4 * 4.4e13 / rate / 3600)   # 11.2
    assert projection.row["projected_fps"] == pytest.approx(rate / 5.0e12)                   # ADE-150's image
    evals = [write_eval(tmp_path, "fisa_main", 0, "ade150", {"PQ": 1.0, "mIoU": 2.0}, preset="paper")]
    cpu = [write_efficiency(tmp_path, "fisa_main", {"FPS": 0.01, "memory_GB": 4.0}, preset="paper",
                            device="CPU: Intel Xeon (2 threads)")]
    metrics = lambda eff: agg.aggregate("paper", evals, eff, classes_of=classes_of)[0]   # noqa: E731
    table = T.build_table("table2_efficiency", metrics(cpu), "paper", projection=projection)
    line = table.line("FISA", "projected")
    assert line.source == T.SOURCE_PROJECTED
    assert line.cells == [f"{rate / 5.0e12:.2f}", T.NOT_REPORTED, f"{25000 * 4 * 4.4e13 / rate / 3600:.1f}", "25",
                          T.NOT_REPORTED, T.NOT_REPORTED, T.NOT_REPORTED]
    note = next(n for n in table.notes if "projected from FLOPs" in n)
    assert f"({shapes})" in note and "0.35 of the NVIDIA A100 80GB SXM's peak bf16 3.12e+14 FLOP/s (presets.paper.budget)" in note
    assert note.endswith("No GPU has measured FISA here (inference measured on: CPU: Intel Xeon (2 threads)): "
                         "the projection stands in for the real thing.")
    assert "projected from FLOPs" in T.to_markdown(table) and "projected from FLOPs" in T.to_latex(table)
    gpu = [write_efficiency(tmp_path, "fisa_main", {"FPS": 2.5, "memory_GB": 9.0}, preset="paper", name="gpu",
                            seed=1, device="NVIDIA H100 80GB HBM3")]
    note = next(n for n in T.build_table("table2_efficiency", metrics(cpu + gpu), "paper",
                                         projection=projection).notes if "projected from FLOPs" in n)
    assert note.endswith("Measured on a GPU as well (NVIDIA H100 80GB HBM3): the reproduced line is the measurement.")
    # without a projection (or for a table without one) nothing changes
    assert not any("projected" in ln.source for ln in T.build_table("table2_efficiency", metrics(cpu),
                                                                     "paper").lines)
    # a projection column that is not a column of the table is named
    layouts = tmp_path / "layouts.yaml"
    bad = yaml.safe_load(T.LAYOUTS.read_text())
    bad["table2_efficiency"]["projection"]["columns"]["fps"] = "projected_fps"
    layouts.write_text(yaml.safe_dump(bad))
    with pytest.raises(T.LayoutError, match=r"table2_efficiency.projection.columns names \['fps'\]"):
        T.build_table("table2_efficiency", metrics(cpu), "paper", layouts=layouts, projection=projection)
    # the CLI as the workflow calls it
    import subprocess
    import sys

    m = tmp_path / "metrics.csv"
    agg.write_csv(metrics(cpu), m)
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", "analysis.tables", "--target", "table2_efficiency", "--preset", "paper",
                          "--config", str(root / "config.yaml"), "--projection-shapes", str(shapes), "--metrics", str(m),
                          "--out-tex", str(tmp_path / "t.tex"), "--out-md", str(tmp_path / "t.md")],
                         cwd=root, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"|  | {T.SOURCE_PROJECTED} | {rate / 5.0e12:.2f} |" in (tmp_path / "t.md").read_text()


def test_table3f_uses_referring_overall_iou(tmp_path):
    paths = [write_eval(tmp_path, "fisa", 0, "refcoco", {"oIoU": 30.0, "mIoU": 1.0}),
             write_eval(tmp_path, "baseline", 0, "refcocoplus", {"oIoU": 20.0, "mIoU": 1.0})]
    table = T.build_table("table3f_refcoco", _metrics(paths), "small")
    assert table.columns == ["RefCOCO oIoU", "RefCOCO+ oIoU"]
    assert table.line("with FISA", "reproduced").cells == ["30.0", T.MISSING]
    assert table.line("with FISA", "Δ").cells == ["+5.4", T.NOT_REPORTED]
    assert table.line("without FISA", "reproduced").cells == [T.MISSING, "20.0"]


def test_layout_reading_an_experiment_the_target_does_not_build(tmp_path):
    layouts = tmp_path / "layouts.yaml"
    bad = yaml.safe_load(T.LAYOUTS.read_text())
    bad["table3b_lora"]["rows"][0]["experiment"] = "lora_r999"
    layouts.write_text(yaml.safe_dump(bad))
    with pytest.raises(T.LayoutError, match="lora_r999"):
        T.load_layout("table3b_lora", layouts)
    with pytest.raises(T.LayoutError, match="no table layout 'table9'"):
        T.load_layout("table9")


def test_values_that_round_to_zero_keep_two_significant_digits():
    assert T._fmt(0.0312, ".1f") == "0.031"
    assert T._fmt(-0.0061, "+.1f") == "-0.0061"
    assert T._fmt(0.0061, "+.1f") == "+0.0061"
    assert T._fmt(0.0, ".1f") == "0.0"
    assert T._fmt(26.04, ".1f") == "26.0"
    assert T._fmt(0.05, ".1f") == "0.1"  # rounds up: the column's format is kept


def test_latex_escaping():
    assert T.latex_escape("a_b & 5% #1 ± Δ") == r"a\_b \& 5\% \#1 $\pm$ $\Delta$"


def test_wrong_preset_is_an_error_not_an_empty_table(table1_metrics):
    with pytest.raises(T.LayoutError, match=r"presets \['small'\], none is 'paper'"):
        T.build_table("table1_main", table1_metrics, "paper")


def test_clis_run_as_the_workflow_calls_them(tmp_path):
    """`python -m analysis.aggregate` then `python -m analysis.tables`, in a subprocess from the repo root."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    evals = [write_eval(tmp_path, "lora_r64", 0, "ade150", {"PQ": 24.9}),
             write_eval(tmp_path, "fisa", 0, "ade150", {"PQ": 27.0})]
    m, pc = tmp_path / "metrics.csv", tmp_path / "per_class.csv"
    subprocess.run([sys.executable, "-m", "analysis.aggregate", "--preset", "small", "--eval-jsons", *map(str, evals),
                    "--metrics-out", str(m), "--per-class-out", str(pc)], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "analysis.tables", "--target", "table3b_lora", "--preset", "small",
                    "--metrics", str(m), "--out-tex", str(tmp_path / "t.tex"), "--out-md", str(tmp_path / "t.md")],
                   cwd=root, check=True)
    md = (tmp_path / "t.md").read_text()
    assert "| LoRA rank 64 | reproduced (n=1) | 24.9 |" in md
    assert "|  | Δ (ours − paper) | -1.0 |" in md
    assert "| LoRA rank 256 | reproduced (no results) | **missing** |" in md
    bad = subprocess.run([sys.executable, "-m", "analysis.tables", "--target", "table9", "--preset", "small",
                          "--metrics", str(m), "--out-tex", str(tmp_path / "x.tex"), "--out-md", str(tmp_path / "x.md")],
                         cwd=root, capture_output=True, text=True)
    assert bad.returncode != 0 and "no table layout 'table9'" in bad.stderr
    assert not (tmp_path / "x.tex").exists()


def test_every_paper_table_number_has_a_cell_in_a_layout():
    """A typo in a row or column label would silently hide a paper number: every one must be placed."""
    paper = T.load_paper_numbers()
    layouts = yaml.safe_load(T.LAYOUTS.read_text())
    placed = set()
    for target, layout in layouts.items():
        if target == "figures":
            continue
        for row in layout["rows"]:
            for col in layout["columns"]:
                if row.get("paper_row"):
                    placed.add((layout["paper_table"], row["paper_row"], col["label"]))
    tables = paper[paper.table.str.startswith("table")]
    unplaced = [k for k in zip(tables.table, tables.row, tables.column) if k not in placed]
    assert unplaced == []


def test_seeds_of_one_config_are_not_a_pooling_warning(tmp_path):
    """config_hash includes the seed; the seedless hash tells seeds apart from mixed configurations."""
    def metrics(seedless):
        paths = [write_eval(tmp_path / str(seedless), "fisa", s, "ade150", {"PQ": 27.0 + s}, config_hash=f"cfg{s}",
                            provenance={"config_hash_seedless": seedless[s], "checkpoint_sha256": "ab" * 32})
                 for s in range(2)]
        return _metrics(paths)

    same = T.build_table("table3a_components", metrics(("abc", "abc")), "small")
    note = next(n for n in same.notes if "(fisa)" in n)
    assert "cfg0, cfg1" in note and "WARNING" not in note
    mixed = T.build_table("table3a_components", metrics(("abc", "xyz")), "small")
    assert "WARNING: several configurations pooled." in next(n for n in mixed.notes if "(fisa)" in n)
    old = T.build_table("table3a_components", metrics(("", "")), "small")   # records from before the seedless hash
    assert "WARNING: several config hashes pooled" in next(n for n in old.notes if "(fisa)" in n)
    assert set(metrics(("abc", "abc")).checkpoint_sha256) == {"ab" * 32}
