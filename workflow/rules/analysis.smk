# Aggregation and one rule per table / figure (named after it: `snakemake table3b_lora`).
# Each target aggregates only its own evaluations (results/<P>/metrics/<target>.csv), so
# regenerating one figure runs only what it needs; `aggregate` writes the tidy
# results/<P>/metrics.csv over every experiment in scope.


def _all_evals():
    return evals_of([e for e in config["experiments"] if in_scope(e)])


def _all_efficiency():
    exps = {e for spec in TARGETS.values() for e in spec.get("efficiency", []) or []}
    return [efficiency_json(e) for e in sorted(exps) if in_scope(e)]


def _target_evals(target):
    return evals_of(target_experiments(target), TARGETS[target].get("datasets"))


def _target_efficiency(target):
    return [efficiency_json(e) for e in TARGETS[target].get("efficiency", []) or []]


def _aggregate_shell():
    return (PYTHON + " -m analysis.aggregate --preset {params.preset} --eval-jsons {input.evals:q}"
            " {params.eff_flag} --metrics-out {output.metrics:q}"
            " --per-class-out {output.per_class:q} > {log:q} 2>&1")


rule aggregate:
    """Every evaluation in scope -> results/<P>/metrics.csv and per_class.csv."""
    output:
        metrics=f"{RESULTS}/metrics.csv",
        per_class=f"{RESULTS}/per_class.csv",
    input:
        evals=_all_evals(),
        efficiency=_all_efficiency(),
    params:
        preset=PRESET,
        eff_flag=lambda wc, input: ("--efficiency-jsons " + " ".join(shlex.quote(f) for f in input.efficiency))
        if input.efficiency else "",
    log:
        log_path("aggregate", "all"),
    conda:
        ANALYSIS_ENV
    threads: rule_threads("aggregate")
    resources:
        **rule_resources("aggregate"),
    shell:
        _aggregate_shell()


def _caption(target):
    path = REPO / f"workflow/report/{target}.rst"
    return {"caption": str(path)} if path.exists() else {}


for _target in TARGETS:

    rule:
        name:
            f"aggregate_{_target}"
        output:
            metrics=f"{RESULTS}/metrics/{_target}.csv",
            per_class=f"{RESULTS}/per_class/{_target}.csv",
        input:
            evals=_target_evals(_target),
            efficiency=_target_efficiency(_target),
        params:
            preset=PRESET,
            eff_flag=lambda wc, input: ("--efficiency-jsons " + " ".join(shlex.quote(f) for f in input.efficiency))
            if input.efficiency else "",
        log:
            log_path("aggregate", _target),
        conda:
            ANALYSIS_ENV
        threads: rule_threads("aggregate")
        resources:
            **rule_resources("aggregate"),
        shell:
            _aggregate_shell()

    if _target in TABLES:

        rule:
            name:
                _target
            output:
                tex=report(f"{RESULTS}/tables/{_target}.tex", category="Tables", **_caption(_target)),
                md=f"{RESULTS}/tables/{_target}.md",
            input:
                metrics=f"{RESULTS}/metrics/{_target}.csv",
                section=SECTIONS[_target],
                # Table 2: the FLOPs projection it cites (layouts.yaml `projection`; budget.smk)
                projection=[shapes_csv(e) for e in [projection_of(_target)] if e],
            params:
                target=_target,
                preset=PRESET,
                engine=ENGINE_ARGS,   # --config (intervals, verdict marks: presets.<P>.analysis) --preset
                projection=lambda wc, input: ("--projection-shapes " + shlex.quote(input.projection[0]))
                if input.projection else "",
            log:
                log_path("tables", _target),
            conda:
                ANALYSIS_ENV
            threads: rule_threads("tables")
            resources:
                **rule_resources("tables"),
            shell:
                PYTHON + " -m analysis.tables --target {params.target} {params.engine} {params.projection}"
                " --metrics {input.metrics:q} --out-tex {output.tex:q} --out-md {output.md:q} > {log:q} 2>&1"

    else:

        rule:
            name:
                _target
            output:
                pdf=f"{RESULTS}/figures/{_target}.pdf",
                png=report(f"{RESULTS}/figures/{_target}.png", category="Figures", **_caption(_target)),
            input:
                metrics=f"{RESULTS}/metrics/{_target}.csv",
                per_class=f"{RESULTS}/per_class/{_target}.csv",
                # Figures may read the runs themselves (loss curves, qualitative predictions).
                runs=[f"{trained_run(e, s)}/done.json" for e in target_experiments(_target) for s in seeds_of(e)],
                config=ancient(EFFECTIVE_CONFIG),   # --config of ENGINE_ARGS (written by rule effective_config)
                section=SECTIONS[_target],
            params:
                target=_target,
                preset=PRESET,
                engine=ENGINE_ARGS,
                results=RESULTS,
            log:
                log_path("figures", _target),
            conda:
                CONDA_ENV
            threads: rule_threads("figures")
            resources:
                **rule_resources("figures"),
            shell:
                PYTHON + " -m analysis.figures --target {params.target} {params.engine}"
                " --metrics {input.metrics:q} --per-class {input.per_class:q} --results-dir {params.results:q}"
                " --out-pdf {output.pdf:q} --out-png {output.png:q} > {log:q} 2>&1"


def _scorecard_labels(wildcards, output):
    """The report's label of the scorecard item: its headline ("N of M paper numbers reproduced")."""
    from analysis.scorecard import headline_of_csv

    return {"scorecard": headline_of_csv(output.csv)}


rule scorecard:
    """Every paper number judged (reproduced / below / above / inconclusive): CSV + one-page Markdown, PDF, HTML."""
    output:
        csv=f"{RESULTS}/reproduction/scorecard.csv",
        md=f"{RESULTS}/reproduction/scorecard.md",
        pdf=f"{RESULTS}/reproduction/scorecard.pdf",
        html=report(f"{RESULTS}/reproduction/scorecard.html", category="Scorecard",
                    caption=str(REPO / "workflow/report/scorecard.rst"), labels=_scorecard_labels),
    input:
        metrics=f"{RESULTS}/metrics.csv",
        # what shapes the verdicts besides the metrics: every layout and paper number
        layouts=str(REPO / "analysis/layouts.yaml"),
        paper_numbers=str(REPO / "analysis/paper_numbers.csv"),
    params:
        engine=ENGINE_ARGS,
        preset=PRESET,
    log:
        log_path("scorecard", "all"),
    conda:
        ANALYSIS_ENV
    threads: rule_threads("tables")
    resources:
        **rule_resources("tables"),
    shell:
        PYTHON + " -m analysis.scorecard {params.engine} --metrics {input.metrics:q} --out-csv {output.csv:q}"
        " --out-md {output.md:q} --out-pdf {output.pdf:q} --out-html {output.html:q} > {log:q} 2>&1"


rule training_curves:
    """Training curves (losses.csv) of every run of a table: one overview figure, one PNG per run."""
    output:
        pdf=f"{RESULTS}/figures/curves/{{table}}.pdf",
        png=report(f"{RESULTS}/figures/curves/{{table}}.png", category="Training curves",
                   caption=str(REPO / "workflow/report/training_curves.rst")),
        runs=directory(f"{RESULTS}/curves/{{table}}"),
    input:
        # the runs that trained (an evaluation-only experiment, `weights_from`, has no curve of its own)
        lambda wc: sorted({f"{trained_run(e, s)}/done.json" for e in target_experiments(wc.table) for s in seeds_of(e)}),
    wildcard_constraints:
        table="|".join(TABLES),
    params:
        engine=ENGINE_ARGS,
        preset=PRESET,
        results=RESULTS,
    log:
        log_path("curves", "{table}"),
    conda:
        ANALYSIS_ENV
    threads: rule_threads("figures")
    resources:
        **rule_resources("figures"),
    shell:
        PYTHON + " -m analysis.curves --target {wildcards.table} {params.engine} --results-dir {params.results:q}"
        " --out-pdf {output.pdf:q} --out-png {output.png:q} --runs-dir {output.runs:q} > {log:q} 2>&1"
# Aggregation, tables and figures take about a second of work: they run in the main
# Snakemake process (`localrules`), never as SLURM jobs (no queueing, start-up or status
# polling), so re-making a figure after a layout edit takes seconds on a login node.
workflow.localrules("aggregate", *[f"aggregate_{t}" for t in TARGETS], *TARGETS, "scorecard", "training_curves")
