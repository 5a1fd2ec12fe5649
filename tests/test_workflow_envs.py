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


def test_every_env_file_lists_exactly_the_pyproject_dependencies():
    deps, requires_python = _pyproject()
    env_files = sorted((REPO / "envs").glob("*.yaml"))
    assert env_files, "envs/ holds no conda environment"
    for path in env_files:
        env = yaml.safe_load(path.read_text())
        pip = [d for d in env["dependencies"] if isinstance(d, dict)]
        assert len(pip) == 1, f"{path.name}: one pip section expected"
        listed = dict(_norm(r) for r in pip[0]["pip"])
        assert listed == deps, (f"{path.name} differs from pyproject.toml: missing "
                                f"{sorted(set(deps.items()) - set(listed.items()))}, extra "
                                f"{sorted(set(listed.items()) - set(deps.items()))}")
        python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
        minimum = re.search(r">=\s*3\.(\d+)", requires_python).group(1)
        assert int(python.split("=")[-1].split(".")[1]) >= int(minimum), f"{path.name}: {python} < {requires_python}"


def test_every_rule_runs_in_a_conda_env_that_exists():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        if "shell:" in text:
            assert "CONDA_ENV" in text, f"{smk.name}: rules without a conda env"
    assert (REPO / "envs" / "fisa.yaml").exists()
