# Work-around for a Snakemake planning bug that this workflow's `ancient()` inputs hit on the
# everyday edit-and-rerun path. Plain Python; included first by the Snakefile (and by
# tests/test_snakemake_fixes.py on Snakemake's own minimal example).
#
# The bug (snakemake/snakemake#4166, open; seen in 9.19 and in 9.27.1, the version we test):
# `DAG.update_needrun` walks the jobs in topological order; when a job must rerun, it "masks"
# every job downstream of it, i.e. skips their own checks (missing output, params, ...), on the
# assumption that the breadth-first pass that follows marks them as needing to run because their
# input is being re-made. That pass deliberately skips a job whose inputs from the re-made job
# are all `ancient()` and exist. Such a job was masked and then skipped: its own reasons, and
# those of everything below it, are never looked at. Here: any edit of config.yaml rewrites
# results/<P>/configs/config.yaml (rule `effective_config`, an `ancient` input of fetch_checkpoint
# and the figures), and a re-made dataset rewrites its marker (an `ancient` input of train,
# evaluate, train_generator); a requested training or evaluation that is missing was then not
# planned at all, and Snakemake exited 0 having built only the config file or the data.
#
# The fix: the masking walk does not cross an edge whose files are all `ancient()`. A job reached
# only that way is checked on its own, exactly as if the upstream job had not rerun (which is what
# `ancient` means); a job reached through any ordinary edge stays masked and the breadth-first
# pass marks it, as before. Nothing else of Snakemake changes: only the one `bfs` call that
# `update_needrun` makes for the masking (identified by its caller) is redirected. If Snakemake's
# code changes so that this call is not where we expect it, the fix is not applied and a warning
# says so (tests/test_snakemake_fixes.py then fails on the minimal example).
import sys
from collections import deque

import snakemake.dag as _snakemake_dag
from snakemake.logging import logger as _logger

_MASKING_CALL = "masked.update(self.bfs(self.depending, job))"


def _masking_walk(dag, jobs):
    """Jobs downstream of `jobs`, not crossing edges whose files are all ancient()."""
    queue = deque(jobs)
    visited = set(queue)
    while queue:
        job = queue.popleft()
        yield job
        for job_, files in dag.depending[job].items():
            if job_ in visited or (files and all(f.is_ancient for f in files)):
                continue
            visited.add(job_)
            queue.append(job_)


def _install_ancient_masking_fix():
    import inspect

    dag_class = _snakemake_dag.DAG
    if getattr(dag_class, "_fisa_ancient_masking_fix", False):
        return  # included twice (a SLURM job's Snakemake, a test)
    if _MASKING_CALL not in inspect.getsource(dag_class.update_needrun):
        _logger.warning("workflow/rules/snakemake_fixes.smk: Snakemake's DAG.update_needrun no longer "
                        f"contains {_MASKING_CALL!r}; the fix for snakemake/snakemake#4166 is not applied "
                        "(check whether this Snakemake still needs it)")
        return
    original_bfs = dag_class.bfs

    def bfs(self, direction, *jobs, stop=lambda job: False):
        if direction is self.depending and sys._getframe(1).f_code.co_name == "update_needrun":
            return _masking_walk(self, jobs)
        return original_bfs(self, direction, *jobs, stop=stop)

    dag_class.bfs = bfs
    dag_class._fisa_ancient_masking_fix = True


_install_ancient_masking_fix()
