"""Analysis and reporting: tidy metrics, the paper's tables and figures, notebooks.

- `analysis.aggregate`: result JSONs -> `metrics.csv`, `per_class.csv` (CLI).
- `analysis.tables`: a paper table in LaTeX + Markdown, reproduced / paper / Δ per cell (CLI).
- `analysis.figures`: a paper figure as PDF + PNG; plotting functions return their data (CLI).
- `analysis.per_class`, `analysis.qualitative`, `analysis.vocabulary`: helpers the notebooks use.

Data files: `paper_numbers.csv` (the paper's numbers), `layouts.yaml` (table layouts and
figure references), `targets.yaml` (shared with the workflow: what each target reads).
"""
