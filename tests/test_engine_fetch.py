"""`python -m fisa.engine.fetch` on the small preset (nothing to download) and its errors; QuickGELU."""
import json
from pathlib import Path
from unittest import mock

import pytest

from fisa.models.clip_backbone import create_clip, uses_quick_gelu
from fisa.engine.fetch import main

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


# --------------------------------------------------------------------------- converted generators


def _served_pkl(tmp_path, payload=b"not really a pickle, but bytes with a known sha256" * 1000):
    import hashlib

    served = tmp_path / "served"
    served.mkdir()
    sha = hashlib.sha256(payload).hexdigest()
    (served / f"model_final_{sha[:6]}.pkl").write_bytes(payload)
    (served / "model_final_000000.pkl").write_bytes(payload)  # the name promises another sha256
    return served, sha, payload


def test_converted_generator_download_resumes_and_checks_the_d2_name_sha(tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_download_helpers import FileServer

    from fisa.engine.fetch import download_checkpoint, expected_sha256, fetch_generator

    assert expected_sha256("https://x/model_final_94dc52.pkl") == "94dc52"
    assert expected_sha256("https://x/model_final_94dc52.pkl", "AB" * 32) == "ab" * 32
    assert expected_sha256("https://x/weights.pth") is None
    served, sha, payload = _served_pkl(tmp_path)
    converted = []
    monkeypatch.setattr("fisa.models.convert_d2_mask2former.convert_file",
                        lambda pkl, out: converted.append((Path(pkl).read_bytes(), Path(out))))
    with FileServer(served) as srv:
        name = f"model_final_{sha[:6]}.pkl"
        srv.faults[name] = {"drop_after": len(payload) // 3, "times": 1}  # connection cut mid-body
        cache = tmp_path / "cache"
        rec = fetch_generator("r50", {"source": "converted", "url": f"{srv.url}/{name}"}, cache)
        assert rec["action"] == "converted" and converted == [(payload, cache / "generators" / "r50")]
        ranges = [r for n, r in srv.requests if n == name]
        assert ranges[0] is None and ranges[1].startswith("bytes=") and int(ranges[1][6:].split("-")[0]) > 0
        # a second fetch re-checks the file on disk and does not download again
        fetch_generator("r50", {"source": "converted", "url": f"{srv.url}/{name}"}, cache)
        assert len([1 for n, _ in srv.requests if n == name]) == len(ranges)
        # the name promises sha256 000000...: refused, and the wrong bytes are not kept
        bad = f"{srv.url}/model_final_000000.pkl"
        with pytest.raises(RuntimeError, match=r"model_final_000000\.pkl: sha256 mismatch: expected 000000\.\.\., got "
                                               + sha):
            download_checkpoint(bad, tmp_path / "dl" / "model_final_000000.pkl", backoff=0.01)
        assert not list((tmp_path / "dl").iterdir())
        # an explicit full sha256 in the entry wins over the name
        with pytest.raises(RuntimeError, match="expected " + "0" * 64):
            download_checkpoint(f"{srv.url}/{name}", tmp_path / "dl2" / name, "0" * 64, backoff=0.01)


def test_fetch_cli_reports_a_corrupt_checkpoint(tmp_path, monkeypatch, capsys):
    import sys

    import yaml

    sys.path.insert(0, str(Path(__file__).parent))
    from test_download_helpers import FileServer

    served, sha, payload = _served_pkl(tmp_path)
    cfg = yaml.safe_load(Path(CONFIG).read_text())
    with FileServer(served) as srv:
        name = f"model_final_{sha[:6]}.pkl"
        srv.faults[name] = {"corrupt": True}
        cfg["presets"]["small"]["generators"]["r50"] = {"source": "converted", "url": f"{srv.url}/{name}"}
        cfg["presets"]["small"]["cache_dir"] = str(tmp_path / "cache")
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
        assert main(["--config", str(tmp_path / "config.yaml"), "--preset", "small", "--generator", "r50"]) == 1
    err = capsys.readouterr().err
    assert f"error: generator 'r50': {srv.url}/{name}: sha256 mismatch: expected {sha[:6]}..." in err
    assert not (tmp_path / "cache" / ".done").exists()


def _hf_cache_file(root: Path, repo_id: str, filename: str, commit: str = "0" * 40) -> Path:
    """Where huggingface_hub's cache keeps `filename` of `repo_id` at `commit` (refs/main -> commit)."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit / filename


@pytest.mark.slow
def test_paper_backbone_loads_hub_layout_offline(tmp_path, monkeypatch):
    """The paper preset's ViT-B-16 `openai`: random weights written where open_clip resolves the tag
    (its hf_hub repo, open_clip_model.safetensors, in <cache_dir>/open_clip's HF cache), then the
    fetch rule's call and the model factory's call load them with the hub offline."""
    import os

    import huggingface_hub.constants
    import open_clip
    import torch
    from safetensors.torch import save_file

    from fisa.config import load_config
    from fisa.engine.fetch import fetch_backbone

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    entry = load_config(CONFIG)["presets"]["paper"]["backbones"]["vit_b16"]
    hub = open_clip.get_pretrained_cfg(entry["model"], entry["pretrained"])["hf_hub"]
    repo_id, filename = os.path.split(hub)  # "timm/vit_base_patch16_clip_224.openai", "" (open_clip's default name)
    assert filename == ""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        ref = open_clip.create_model(entry["model"], force_quick_gelu=True)
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    del ref
    # open_clip prefers the safetensors alternative of open_clip_pytorch_model.bin
    path = _hf_cache_file(tmp_path / "open_clip", repo_id, "open_clip_model.safetensors")
    save_file(state, str(path))

    result = fetch_backbone(entry, tmp_path, "vit_b16")
    assert Path(result["path"]).resolve() == path.resolve()
    clip = create_clip(entry, cache_dir=str(tmp_path))
    assert torch.equal(clip.visual.conv1.weight, state["visual.conv1.weight"])
    w = clip.visual.transformer.width
    q = clip.visual.transformer.resblocks[0].attn.q_proj.weight  # split from the fused in_proj
    assert torch.equal(q, state["visual.transformer.resblocks.0.attn.in_proj_weight"][:w])
    assert isinstance(clip.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


def test_paper_hub_generator_loads_offline(tmp_path, monkeypatch):
    """The paper preset's Swin-T Mask2Former id: its stored architecture (config.json) and random
    weights (pytorch_model.bin) in huggingface_hub's cache under <cache_dir>/huggingface; the fetch
    rule's call and the model factory's `load_generator` read them with the hub offline."""
    import huggingface_hub.constants
    import torch

    from fisa.config import load_config
    from fisa.engine.fetch import fetch_generator
    from fisa.models.generator import build_generator_architecture, load_generator

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    entry = load_config(CONFIG)["presets"]["paper"]["generators"]["swin_t"]
    ref = build_generator_architecture(entry, init_seed=5)  # the stored architecture, random weights
    config_path = _hf_cache_file(tmp_path / "huggingface", entry["id"], "config.json")
    ref.config.to_json_file(str(config_path))
    torch.save(ref.state_dict(), config_path.parent / "pytorch_model.bin")

    assert fetch_generator("swin_t", entry, tmp_path)["action"] == "downloaded"
    gen = load_generator("swin_t", entry, cache_dir=str(tmp_path))
    for name, value in list(ref.state_dict().items())[::50]:
        assert torch.equal(gen.state_dict()[name], value), name
    assert gen.config.backbone_config.depths == [2, 2, 6, 2] and gen.config.num_queries == 100
