# The FISA reproduction workflow: datasets -> checkpoints -> training -> evaluation ->
# aggregation -> every table and figure of the paper.
#
#   snakemake --profile slurm all_tables                                # paper preset, SLURM
#   snakemake --cores 2 --config preset=small all_tables all_figures    # small preset, CPU
#
# The same rules serve both presets; only the sizes in config.yaml differ. The rules
# are thin shell calls into `fisa` and `analysis` (docs/workflow.md).

from snakemake.utils import min_version

min_version("9.0")

configfile: "config.yaml"

# The report's first page: the reproduction scorecard (snakemake --report report.zip all).
report: "workflow/report/workflow.rst"


# A work-around for a Snakemake planning bug our ancient() inputs hit (snakemake/snakemake#4166).
include: "workflow/rules/snakemake_fixes.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/configs.smk"
include: "workflow/rules/inputs.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/checkpoints.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/targets.smk"
include: "workflow/rules/budget.smk"
include: "workflow/rules/rehearsal.smk"
