"""Report captions: one per table/figure target, valid reStructuredText once Snakemake's Jinja is applied."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
import yaml
from docutils.core import publish_parts

ROOT = Path(__file__).resolve().parents[1]
TARGETS = yaml.safe_load((ROOT / "analysis" / "targets.yaml").read_text())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_caption_renders_and_names_the_preset(target):
    path = ROOT / "workflow" / "report" / f"{target}.rst"
    assert path.exists(), f"no report caption for {target}"
    text = jinja2.Template(path.read_text(), undefined=jinja2.StrictUndefined).render(
        snakemake=SimpleNamespace(params=SimpleNamespace(preset="small"), config={}))
    html = publish_parts(text, writer="html", settings_overrides={"report_level": 2, "halt_level": 2})["body"]
    assert "Preset: <tt class=\"docutils literal\">small</tt>" in html or "Preset: <span class=\"docutils literal\">small</span>" in html
    assert "System Message" not in html


@pytest.mark.parametrize("name, snakemake", [
    ("scorecard", SimpleNamespace(params=SimpleNamespace(preset="small"), config={})),
    ("training_curves", SimpleNamespace(params=SimpleNamespace(preset="small"),
                                        wildcards=SimpleNamespace(table="table3a_components"), config={})),
    ("workflow", SimpleNamespace(config={"preset": "small"})),
])
def test_scorecard_curves_and_front_page_render(name, snakemake):
    """The report's front page points to the scorecard; the scorecard and curve captions render."""
    text = jinja2.Template((ROOT / "workflow" / "report" / f"{name}.rst").read_text(),
                           undefined=jinja2.StrictUndefined).render(snakemake=snakemake)
    html = publish_parts(text, writer="html", settings_overrides={"report_level": 2, "halt_level": 2})["body"]
    assert "System Message" not in html and "small" in html
    if name == "workflow":
        assert "scorecard" in html.lower() and "N of M paper numbers reproduced" in html
