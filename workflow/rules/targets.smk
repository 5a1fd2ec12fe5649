# Aggregate targets. `all` is the default target.


def in_full_run(target):
    """A target of all/all_tables/all_figures: always, unless analysis/targets.yaml names the
    presets it is part of (the fidelity sensitivity: small only) and with_optional is off."""
    presets = TARGETS[target].get("presets")
    return WITH_OPTIONAL or presets is None or PRESET in presets


rule all_tables:
    """Every table of the paper, the tidy metrics.csv over every experiment, and the scorecard."""
    input:
        [f"{RESULTS}/tables/{t}.tex" for t in TABLES if in_full_run(t)],
        f"{RESULTS}/metrics.csv",
        f"{RESULTS}/reproduction/scorecard.csv",


rule all_figures:
    """Every figure of the paper (PDF and PNG), and the training curves of every table's runs."""
    input:
        [f"{RESULTS}/figures/{t}.{ext}" for t in FIGURES if in_full_run(t) for ext in ("pdf", "png")],
        [f"{RESULTS}/figures/curves/{t}.png" for t in TABLES if in_full_run(t)],


rule all:
    """Every table and figure."""
    default_target: True
    input:
        rules.all_tables.input,
        rules.all_figures.input,


rule fidelity_sensitivity:
    """Each open choice's alternative vs the defaults on ADE150 (docs/choices.md): table + figure."""
    input:
        f"{RESULTS}/tables/table_fidelity_sensitivity.tex",
        f"{RESULTS}/tables/table_fidelity_sensitivity.md",
        f"{RESULTS}/figures/fig_fidelity_sensitivity.pdf",
        f"{RESULTS}/figures/fig_fidelity_sensitivity.png",
