# Aggregate targets. `all` is the default target.


rule all_tables:
    """Every table of the paper, the tidy metrics.csv over every experiment, and the scorecard."""
    input:
        [f"{RESULTS}/tables/{t}.tex" for t in TABLES],
        f"{RESULTS}/metrics.csv",
        f"{RESULTS}/reproduction/scorecard.csv",


rule all_figures:
    """Every figure of the paper (PDF and PNG), and the training curves of every table's runs."""
    input:
        [f"{RESULTS}/figures/{t}.{ext}" for t in FIGURES for ext in ("pdf", "png")],
        [f"{RESULTS}/figures/curves/{t}.png" for t in TABLES],


rule all:
    """Every table and figure."""
    default_target: True
    input:
        rules.all_tables.input,
        rules.all_figures.input,
