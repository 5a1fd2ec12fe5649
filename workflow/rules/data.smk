# Datasets. Each stage's output is the marker `<data_root>/.fisa/<dataset>.<stage>.done`
# that fisa.data writes atomically and last, so a failed or interrupted job leaves nothing
# Snakemake takes as complete, and pointing data_root/$DETECTRON2_DATASETS at datasets
# prepared elsewhere only re-runs the (fast, verifying) stages whose marker is missing.
# The datasets are the registry's (fisa.data.registry.list_datasets -> ALL_DATASETS): one
# wildcard rule per stage, `{dataset}` constrained to those names.
#
# No `cache:` here: the outputs are markers that vouch for a tree under data_root that is
# not a declared output, so Snakemake's between-workflow cache would store and restore the
# marker without the data (docs/workflow.md, "Between-workflow caching").

if DATA_SOURCE == "synthetic":

    rule synthetic_data:
        """Every dataset's small stand-in, in the real on-disk formats (small preset)."""
        output:
            [data_marker(d) for d in ALL_DATASETS],
        params:
            root=DATA_ROOT,
            # presets.<p>.synthetic: image sides and images per stand-in (the rehearsal preset's paper-like sizes)
            sizes=" ".join(f"--size {k}={v}" for k, v in PRESET_CFG.get("synthetic", {}).get("sizes", {}).items()),
            sides=" ".join(["--sides"] + [str(v) for v in PRESET_CFG["synthetic"]["sides"]])
                  if "sides" in PRESET_CFG.get("synthetic", {}) else "",
        log:
            log_path("synthetic_data", "synthetic_data"),
        benchmark:
            bench_path("synthetic_data", "synthetic_data"),
        conda:
            CONDA_ENV
        threads: rule_threads("synthetic_data")
        resources:
            **rule_resources("synthetic_data"),
        shell:
            PYTHON + " -m fisa.data.synthetic --root {params.root:q} --seed 0 {params.sizes} {params.sides} > {log:q} 2>&1"

else:

    def _downloads_read(wildcards):
        """The download markers of the datasets whose files this one reads (RefCOCO/+: COCO's train2014)."""
        return [data_marker(d, "download") for d in get_meta(wildcards.dataset).downloads_of]

    rule download:
        """Fetch, verify and extract one dataset's files (registration-only ones stop with instructions)."""
        output:
            data_marker("{dataset}", "download"),
        input:
            _downloads_read,
        wildcard_constraints:
            dataset="|".join(ALL_DATASETS),
        params:
            root=DATA_ROOT,
        log:
            log_path("download", "{dataset}"),
        conda:
            CONDA_ENV
        threads: rule_threads("download")
        resources:
            **rule_resources("download"),
        shell:
            "python -m fisa.data.download --dataset {wildcards.dataset} --root {params.root:q} > {log:q} 2>&1"

    rule prepare:
        """Convert one downloaded dataset to the layout the loaders read (or check a tree prepared elsewhere)."""
        output:
            data_marker("{dataset}", "prepare"),
        input:
            own=data_marker("{dataset}", "download"),
            read=_downloads_read,
        wildcard_constraints:
            dataset="|".join(ALL_DATASETS),
        params:
            root=DATA_ROOT,
            # a split of another size than expected is an error unless the preset allows subsets
            allow_subset="--allow-subset" if PRESET_CFG["defaults"]["eval"]["allow_subset"] else "",
        log:
            log_path("prepare", "{dataset}"),
        conda:
            CONDA_ENV
        threads: rule_threads("prepare")
        resources:
            **rule_resources("prepare"),
        shell:
            "python -m fisa.data.prepare --dataset {wildcards.dataset} --root {params.root:q} {params.allow_subset}"
            " > {log:q} 2>&1"
