# The real rehearsal (issue 13, docs/rehearsal.md): the paper's training, evaluation and
# efficiency rules at paper shapes on one CPU machine, once per distinct model and once per
# dataset format (fisa.bench.rehearsal decides which), then a table of each job's wall time,
# CPU time and peak RSS from its benchmark file.
#
#   snakemake --cores 2 --keep-going rehearsal --config preset=rehearsal
#   python -m fisa.bench.rehearsal --preset rehearsal     # the table of what ran so far
#
# The same rules as `all_tables` (no second code path); any preset can be rehearsed.

from fisa.bench.rehearsal import dump_plan, planned_jobs, rehearsal_plan

localrules: rehearsal_plan, rehearsal_report, rehearsal


def _rehearsal_plan():
    experiments = [e for e in config["experiments"] if in_scope(e)]
    efficiency = sorted({e for spec in TARGETS.values() for e in spec.get("efficiency", []) or []})
    try:
        # the run configs the workflow resolved once (common.smk), not a second resolution
        return rehearsal_plan(config, PRESET, experiments, efficiency, {e: resolved(e) for e in experiments})
    except ConfigError as e:
        raise WorkflowError(f"rehearsal plan: {e}") from None


REHEARSAL = _rehearsal_plan()


def _job_paths(rule, wildcards):
    """A planned job's output, benchmark and log, from the rule's own patterns."""
    proxy = getattr(rules, rule)
    fill = lambda pattern: str(pattern).format(**wildcards)
    return {"output": fill(proxy.output[0]), "bench": fill(proxy.benchmark), "log": fill(proxy.log[0])}


# rehearsal.smk is included after train.smk and evaluate.smk, whose rules it reads
REHEARSAL.jobs = planned_jobs(REHEARSAL, seed_of=lambda e: seeds_of(e)[0], paths=_job_paths)


rule rehearsal_plan:
    """Which runs, evaluations and efficiency measurements the rehearsal makes (JSON)."""
    output:
        f"{RESULTS}/rehearsal/plan.json",
    params:
        plan=dump_plan(REHEARSAL),   # a changed plan rewrites it (params are a rerun trigger)
    run:
        from fisa.utils.io import atomic_write_text

        atomic_write_text(output[0], params.plan)


rule rehearsal_report:
    """Per planned job: status, wall time, CPU time and peak RSS (its Snakemake benchmark)."""
    output:
        csv=f"{RESULTS}/rehearsal/report.csv",
        md=f"{RESULTS}/rehearsal/report.md",
    input:
        plan=rules.rehearsal_plan.output,
        jobs=[j["output"] for j in REHEARSAL.jobs],
    params:
        preset=PRESET,
        results=RESULTS,
    log:
        log_path("rehearsal_report", "all"),
    conda:
        ANALYSIS_ENV
    shell:
        "python -m fisa.bench.rehearsal --preset {params.preset} --plan {input.plan:q} --results {params.results:q}"
        " --output {output.csv:q} --markdown {output.md:q} > {log:q} 2>&1"


rule rehearsal:
    """The rehearsal: every planned job, then its report (results/<preset>/rehearsal/report.md)."""
    input:
        rules.rehearsal_report.output,
