"""Every command in the README's code blocks is checked: snakemake flags exist, targets are
rules of the workflow, the local snakemake commands plan (dry-run) on the small preset,
pip extras and the CPU wheel line match pyproject, scripts and notebooks exist.

(The notebooks themselves are executed by tests/test_notebooks_analysis.py, the SLURM
scripts by tests/test_workflow_slurm.py, the quick start's plan by tests/test_workflow.py.)"""
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_workflow import snakemake, workflow_copy  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """Each command line of the README's ```bash blocks (comments stripped)."""
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.+?)\n```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _words(cmd: str, program: str) -> list[str]:
    """The words after `program` in a command line (env assignments, sudo, `&&` chains skipped)."""
    for part in cmd.split("&&"):
        words = shlex.split(part)
        while words and (re.match(r"^[A-Z_]+=", words[0]) or words[0] == "sudo"):
            words = words[1:]
        if words and words[0] == program:
            return words[1:]
    return []


def snakemake_commands() -> list[list[str]]:
    return [w for w in (_words(c, "snakemake") for c in readme_commands()) if w]


@pytest.fixture(scope="module")
def snakemake_help() -> str:
    return subprocess.run([sys.executable, "-m", "snakemake", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120).stdout


def test_readme_has_the_newcomer_sections():
    cmds = readme_commands()
    assert any("--index-url https://download.pytorch.org/whl/cpu" in c for c in cmds)
    assert any(".[notebooks]" in c for c in cmds) and any("jupyter nbconvert" in c and "--execute" in c for c in cmds)
    assert any("tests/slurm/slurm-up.sh" in c and "WITH_DBD=1" in c for c in cmds)
    assert any("tests/slurm/slurm-down.sh" in c for c in cmds)
    assert any("--config" in c and "={" in c for c in cmds), "the nested --config form"
    assert "3.11" in (REPO / "README.md").read_text()


def test_snakemake_flags_exist_and_targets_are_rules(snakemake_help, tmp_path):
    copy = workflow_copy(tmp_path)
    res = snakemake(copy, "--list-rules", "--config", "preset=small")
    assert res.returncode == 0, res.stdout[-2000:]
    rules = set(res.stdout.split())
    for words in snakemake_commands():
        i = 0
        while i < len(words):
            w = words[i]
            if w == "--config":
                assert all("=" in c for c in words[i + 1:]), words   # --config takes every word after it
                break
            if w.startswith("-"):
                assert re.search(rf"(^|\s|,){re.escape(w.split('=')[0])}[\s,=]", snakemake_help), f"unknown flag {w}"
                if w in ("--cores", "--profile", "--report", "--slurm-account", "--slurm-status-command"):
                    i += 1
                elif w == "--configfile":
                    while i + 1 < len(words) and not words[i + 1].startswith("-"):
                        i += 1
            elif "/" not in w:
                assert w in rules, f"README target {w!r} is not a rule ({words})"
            i += 1


@pytest.mark.slow  # five dry-runs (about 20 s on 2 idle cores)
def test_local_snakemake_commands_plan_on_the_small_preset(tmp_path):
    copy = workflow_copy(tmp_path)
    (copy / "my_changes.yaml").write_text("presets: {small: {defaults: {train: {lr: 0.002}}}}\n")
    planned = 0
    for words in snakemake_commands():
        if "--cores" not in words or "preset=small" not in words:
            continue
        res = snakemake(copy, "-n", *words)
        assert res.returncode == 0, (words, res.stdout[-3000:])
        assert "Job stats" in res.stdout
        planned += 1
    assert planned >= 4


def test_pip_lines_match_pyproject():
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert SpecifierSet(project["requires-python"]).contains("3.11") and not SpecifierSet(
        project["requires-python"]).contains("3.10")
    deps = {re.split(r"[<>=!~ ]", d, 1)[0]: d[len(re.split(r"[<>=!~ ]", d, 1)[0]):] for d in project["dependencies"]}
    assert Version("2.14.1") in SpecifierSet(deps["torch"]) and Version("0.29.1") in SpecifierSet(deps["torchvision"])
    for cmd in readme_commands():
        words = _words(cmd, "pip")
        for extra in re.findall(r"\.\[(\w+)\]", " ".join(words)):
            assert extra in project["optional-dependencies"], extra


def test_scripts_and_notebooks_named_in_the_readme_exist():
    for cmd in readme_commands():
        for path in re.findall(r"(?:tests|analysis)/[\w/.-]+\.(?:sh|ipynb)", cmd):
            assert (REPO / path).is_file(), path
            if path.endswith(".sh"):
                assert (REPO / path).stat().st_mode & 0o111, f"{path} is not executable"
        for var in re.findall(r"\b(FISA_\w+)=", cmd):
            for nb in re.findall(r"analysis/notebooks/\w+\.ipynb", cmd):
                assert var in (REPO / nb).read_text(), (var, nb)
    assert "WITH_DBD" in (REPO / "tests/slurm/slurm-up.sh").read_text()
