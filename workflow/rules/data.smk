# Datasets. Each stage's output is the marker `<data_root>/.fisa/<dataset>.<stage>.done`
# that fisa.data writes atomically and last, so a failed or interrupted job leaves nothing
# Snakemake takes as complete, and pointing data_root/$DETECTRON2_DATASETS at datasets
# prepared elsewhere only re-runs the (fast, verifying) stages whose marker is missing.

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
        conda:
            CONDA_ENV
        threads: rule_threads("synthetic_data")
        resources:
            **rule_resources("synthetic_data"),
        shell:
            "python -m fisa.data.synthetic --root {params.root:q} --seed 0 {params.sizes} {params.sides} > {log:q} 2>&1"

else:
    # RefCOCO/RefCOCO+ images are COCO train2014, fetched by the COCO download.
    _download_deps = {"refcoco": ["coco"], "refcocoplus": ["coco"]}

    for _ds in ALL_DATASETS:

        rule:
            name:
                f"download_{_ds}"
            output:
                data_marker(_ds, "download"),
            input:
                [data_marker(d, "download") for d in _download_deps.get(_ds, [])],
            params:
                dataset=_ds,
                root=DATA_ROOT,
            log:
                log_path("download", _ds),
            conda:
                CONDA_ENV
            threads: rule_threads("download")
            resources:
                **rule_resources("download"),
            # Registration-only datasets stop here with instructions (fisa.data.download).
            shell:
                "python -m fisa.data.download --dataset {params.dataset} --root {params.root:q} > {log:q} 2>&1"

        rule:
            name:
                f"prepare_{_ds}"
            output:
                data_marker(_ds, "prepare"),
            input:
                [data_marker(_ds, "download")] + [data_marker(d, "download") for d in _download_deps.get(_ds, [])],
            params:
                dataset=_ds,
                root=DATA_ROOT,
                # a split of another size than expected is an error unless the preset allows subsets
                allow_subset="--allow-subset" if PRESET_CFG["defaults"]["eval"]["allow_subset"] else "",
            log:
                log_path("prepare", _ds),
            conda:
                CONDA_ENV
            threads: rule_threads("prepare")
            resources:
                **rule_resources("prepare"),
            shell:
                "python -m fisa.data.prepare --dataset {params.dataset} --root {params.root:q} {params.allow_subset} > {log:q} 2>&1"
