"""workflow/rules/snakemake_fixes.smk on a three-rule workflow, beside plain Snakemake.

snakemake/snakemake#4166: P's params change while P's output exists; Q reads it through ancient();
R (requested, missing) reads Q. Plain Snakemake 9.27.1 plans P alone and exits 0 without R; with
the fix, P and R (Q is not re-made: that is what `ancient` asks for)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

FIX = Path(__file__).resolve().parents[1] / "workflow/rules/snakemake_fixes.smk"

SNAKEFILE = f'''
if config.get("fix") == 1:
    include: "{FIX}"
rule P:
    output: "p.txt"
    params: value=config.get("value", 1)
    shell: "echo {{params.value}} > {{output}}"
rule Q:
    input: ancient("p.txt")
    output: "q.txt"
    shell: "touch {{output}}"
rule R:
    input: "q.txt"
    output: "r.txt"
    shell: "touch {{output}}"
'''


def _snakemake(cwd, *args):
    res = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *args], cwd=cwd, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:]
    return res.stdout


def _planned(cwd, *config):
    out = _snakemake(cwd, "-n", "r.txt", "--config", *config)
    return sorted(set(re.findall(r"^rule (\w+):", out, flags=re.M)))


@pytest.fixture()
def made(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    _snakemake(tmp_path, "r.txt")
    (tmp_path / "r.txt").unlink()
    return tmp_path


def test_plain_snakemake_still_has_the_bug(made):
    # If this fails, the Snakemake in use has fixed #4166: drop snakemake_fixes.smk.
    assert _planned(made, "value=2") == ["P"]


def test_with_the_fix_a_missing_target_below_an_ancient_input_is_planned(made):
    assert _planned(made, "value=2", "fix=1") == ["P", "R"]
    # ancient() keeps its meaning: with R present, re-making P re-makes nothing below it
    _snakemake(made, "r.txt", "--config", "value=2", "fix=1")
    assert sorted(p.name for p in made.glob("*.txt")) == ["p.txt", "q.txt", "r.txt"]
    assert (made / "p.txt").read_text().strip() == "2"
    out = _snakemake(made, "-n", "r.txt", "--config", "value=3", "fix=1")
    assert re.findall(r"^rule (\w+):", out, flags=re.M) == ["P"]
