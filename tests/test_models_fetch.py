"""`python -m fisa.models.fetch` on the small preset (nothing to download) and its errors; QuickGELU."""
import json
from pathlib import Path
from unittest import mock

import pytest

from fisa.models.clip_backbone import create_clip, uses_quick_gelu
from fisa.models.fetch import main

CONFIG = str(Path(__file__).resolve().parents[1] / "config.yaml")


def test_fetch_small_preset_writes_done_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []

    def fake_pretrain(entry, out_path, **kw):  # the real one: tests/test_pretrain_clip.py
        calls.append((entry["model"], Path(out_path)))
        return {"iterations": entry["pretrain"]["iterations"]}

    monkeypatch.setattr("fisa.engine.pretrain_clip.pretrain_clip", fake_pretrain)
    assert main(["--config", CONFIG, "--preset", "small", "--backbone", "vit_l14_336"]) == 0
    assert main(["--config", CONFIG, "--preset", "small", "--generator", "swin_b"]) == 0
    done = tmp_path / "resources/small/checkpoints/.done"
    b = json.loads((done / "backbone_vit_l14_336.json").read_text())
    g = json.loads((done / "generator_swin_b.json").read_text())
    # small-preset backbones are "pre-trained" by the harness into <cache_dir>/clip/<name>.pt
    assert b["action"] == "pretrained" and b["entry"]["model"] == "fisa-tiny-vit-l"
    assert calls == [("fisa-tiny-vit-l", Path("resources/small/checkpoints/clip/vit_l14_336.pt"))]
    assert b["pretraining"]["iterations"] == b["entry"]["pretrain"]["iterations"]
    assert g["action"] == "none" and "train_generator" in g["reason"]
    assert sorted(p.name for p in done.iterdir()) == ["backbone_vit_l14_336.json", "generator_swin_b.json"]


def test_fetch_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--config", CONFIG, "--preset", "small", "--backbone", "vit_h"]) == 2
    assert "--backbone 'vit_h' not in presets.small.backbones" in capsys.readouterr().err
    assert main(["--config", CONFIG, "--preset", "nope", "--generator", "swin_b"]) == 2
    assert "--preset 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config", CONFIG, "--preset", "small"])  # needs --backbone or --generator
    assert not (tmp_path / "resources").exists()


def test_openai_weights_get_quick_gelu():
    assert uses_quick_gelu("ViT-L-14-336", "openai") is True
    assert uses_quick_gelu("ViT-B-16", "openai") is True
    assert uses_quick_gelu("fisa-tiny-vit-l", None) is False
    import open_clip

    real = open_clip.create_model
    with mock.patch("open_clip.create_model", side_effect=lambda *a, **k: real("fisa-tiny-vit-l")) as cm:
        create_clip({"model": "ViT-B-16", "pretrained": "openai"})
    assert cm.call_args.kwargs["force_quick_gelu"] is True
    assert cm.call_args.kwargs["pretrained"] == "openai"
