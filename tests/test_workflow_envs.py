"""envs/*.yaml (conda, for cluster users) agree with pyproject.toml's dependencies."""
import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _norm(req: str) -> tuple[str, str]:
    """'open_clip_torch>=3.0,<4' -> ('open-clip-torch', '<4,>=3.0'): PEP 503 name, sorted specifiers."""
    m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$", req)
    name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
    spec = ",".join(sorted(s.replace(" ", "") for s in m.group(2).split(",") if s.strip()))
    return name, spec


def _pyproject():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return dict(_norm(r) for r in data["project"]["dependencies"]), data["project"]["requires-python"]


# Environments that hold part of the dependencies (rules that need less); every other env file
# holds all of them.
PARTIAL_ENVS = {"analysis.yaml"}


def _env_deps(path):
    env = yaml.safe_load(path.read_text())
    pip = [d for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pip) == 1, f"{path.name}: one pip section expected"
    return env, dict(_norm(r) for r in pip[0]["pip"])


def test_every_env_file_lists_exactly_the_pyproject_dependencies():
    deps, requires_python = _pyproject()
    env_files = sorted((REPO / "envs").glob("*.yaml"))
    assert env_files, "envs/ holds no conda environment"
    for path in env_files:
        env, listed = _env_deps(path)
        if path.name in PARTIAL_ENVS:  # a subset, with pyproject's own specifiers
            assert set(listed.items()) <= set(deps.items()), (
                f"{path.name}: not in pyproject.toml as written: {sorted(set(listed.items()) - set(deps.items()))}")
        else:
            assert listed == deps, (f"{path.name} differs from pyproject.toml: missing "
                                    f"{sorted(set(deps.items()) - set(listed.items()))}, extra "
                                    f"{sorted(set(listed.items()) - set(deps.items()))}")
        python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
        minimum = re.search(r">=\s*3\.(\d+)", requires_python).group(1)
        assert int(python.split("=")[-1].split(".")[1]) >= int(minimum), f"{path.name}: {python} < {requires_python}"


def test_every_rule_runs_in_a_conda_env_that_exists():
    """Each rule that runs a shell command names one of the two envs in its `conda:` directive."""
    shell_rules = 0
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        blocks = re.split(r"^\s*(?=(?:rule|checkpoint) \w+:)", smk.read_text(), flags=re.M)
        for block in blocks[1:]:
            name = block.split(":", 1)[0]
            if "\n    shell:" in block or "\n        shell:" in block:
                shell_rules += 1
                env = re.search(r"\n\s+conda:\n\s+(\w+)", block)
                assert env and env.group(1) in ("CONDA_ENV", "ANALYSIS_ENV"), f"{smk.name}: {name} has no conda env"
    assert shell_rules >= 10
    assert (REPO / "envs" / "fisa.yaml").exists() and (REPO / "envs" / "analysis.yaml").exists()


# + the launcher every rule starts its program through (fisa.engine.warm: the standard library only)
# and the rehearsal's report (workflow/rules/rehearsal.smk)
ANALYSIS_PROGRAMS = ("analysis.aggregate", "analysis.tables", "analysis.scorecard", "analysis.curves",
                     "fisa.engine.warm", "fisa.bench.rehearsal")


def test_the_analysis_env_holds_what_its_programs_import():
    """The programs of envs/analysis.yaml import with torch and its stack not installed, and every
    third-party module they load comes from a package of that env."""
    import subprocess
    import sys

    _, listed = _env_deps(REPO / "envs" / "analysis.yaml")
    assert not {"torch", "torchvision", "open-clip-torch", "transformers", "peft"} & set(listed)
    probe = (
        "import sys, importlib.abc\n"
        "class Absent(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'open_clip', 'transformers', 'peft'):\n"
        "            raise ImportError(f'{name} is not in envs/analysis.yaml')\n"
        "sys.meta_path.insert(0, Absent())\n"
        f"for m in {ANALYSIS_PROGRAMS!r}: __import__(m)\n"
        "print(' '.join(sorted({n.split('.')[0] for n in sys.modules})))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    # import name -> the distribution of pyproject.toml that provides it
    distribution = {"numpy": "numpy", "scipy": "scipy", "pandas": "pandas", "matplotlib": "matplotlib",
                    "yaml": "pyyaml", "jsonschema": "jsonschema", "PIL": "pillow", "hotcoco": "hotcoco",
                    "pycocotools": "pycocotools", "tifffile": "tifffile", "tqdm": "tqdm", "filelock": "filelock",
                    "snakemake": "snakemake", "nbformat": "nbformat", "nbclient": "nbclient"}
    needed = {distribution[m] for m in out.stdout.split() if m in distribution}
    assert needed <= set(listed), f"imported but not in envs/analysis.yaml: {sorted(needed - set(listed))}"


def test_analysis_env_is_the_one_its_rules_name():
    # the variable the analysis rules use (workflow/rules/common.smk)
    assert 'ANALYSIS_ENV = str(REPO / "envs/analysis.yaml")' in (REPO / "workflow/rules/common.smk").read_text()
