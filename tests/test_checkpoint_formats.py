"""The paper preset's checkpoints in the layouts the real sources serve, loaded offline through
the real code path: the fetch rule (`python -m fisa.engine.fetch --preset paper ...`) finds them
where open_clip / huggingface_hub / the detectron2 download put them, and the model factory
loads them (issue 13, item 3). Files come from fisa.bench.formats (placeholder weights with
1-element storages) and, for the detectron2 .pkl, from test_models_convert's independent layout."""
import hashlib
import pickle
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fisa.bench.formats import placeholder_value, write_hub_generator, write_open_clip_tag
from fisa.engine.fetch import done_path, main

sys.path.insert(0, str(Path(__file__).parent))
CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"


@pytest.fixture
def paper_config(tmp_path, monkeypatch):
    """config.yaml with the paper preset's cache_dir in tmp_path, the hub offline."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["presets"]["paper"]["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg["presets"]["paper"], tmp_path / "cache"


def _fetch(config_path, kind, name):
    import json

    assert main(["--config", str(config_path), "--preset", "paper", f"--{kind}", name]) == 0
    return json.loads(done_path(Path(yaml.safe_load(config_path.read_text())["presets"]["paper"]["cache_dir"]),
                                kind, name).read_text())


def test_placeholder_files_keep_one_element_storages(tmp_path):
    """The trick the fast tests rest on: torch.save keeps an expanded tensor's 1-element storage."""
    path = tmp_path / "w.bin"
    torch.save({"w": torch.full((1,), 0.75).expand(4096, 4096)}, path)
    assert path.stat().st_size < 10_000
    w = torch.load(path, weights_only=True)["w"]
    assert w.shape == (4096, 4096) and w.untyped_storage().nbytes() == 4 and float(w[17, 3]) == 0.75


@pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter")  # meta: a check, not a copy
@pytest.mark.parametrize("backbone", ["vit_l14_336", "vit_b16", "eva01_g14"])
def test_open_clip_tag_is_found_by_the_fetch_rule_and_loads_on_meta(paper_config, backbone):
    """open_clip's layout of each paper backbone tag: the fetch rule resolves the file, and
    open_clip's load (create_clip's call, on meta: every key and shape checked, no memory)
    accepts it; a file missing one key is refused."""
    import open_clip

    from fisa.models.clip_backbone import uses_quick_gelu

    config_path, preset, cache = paper_config
    entry = preset["backbones"][backbone]
    path = write_open_clip_tag(entry, cache)
    assert path.stat().st_size < 5_000_000  # placeholders: kB, not GB
    record = _fetch(config_path, "backbone", backbone)
    assert record["action"] == "downloaded" and Path(record["path"]).resolve() == path.resolve()

    def load():
        return open_clip.create_model(entry["model"], pretrained=entry["pretrained"],
                                      cache_dir=str(cache / "open_clip"),
                                      force_quick_gelu=uses_quick_gelu(entry["model"], entry["pretrained"]),
                                      device="meta")

    load()
    if backbone == "vit_b16":  # the check can fail: one key short
        state = torch.load(path, weights_only=True)
        dropped = next(k for k in state if k.startswith("visual.transformer.resblocks.3."))
        del state[dropped]
        torch.save(state, path)
        with pytest.raises(RuntimeError, match="Missing key.*" + dropped.replace(".", r"\.")):
            load()


@pytest.mark.slow
def test_vit_l14_336_openai_loads_at_full_size_through_create_clip(paper_config):
    """The paper's main backbone: the fetch rule's file loaded by create_clip (entry image_size 896),
    QuickGELU, q split from the fused in_proj."""
    import open_clip

    from fisa.models.clip_backbone import create_clip

    config_path, preset, cache = paper_config
    entry = preset["backbones"]["vit_l14_336"]
    path = write_open_clip_tag(entry, cache)
    _fetch(config_path, "backbone", "vit_l14_336")
    keys = list(torch.load(path, weights_only=True))
    clip = create_clip(entry, cache_dir=str(cache), backbone="vit_l14_336")
    conv = keys.index("visual.conv1.weight")
    assert torch.all(clip.visual.conv1.weight == placeholder_value(conv))
    in_proj = keys.index("visual.transformer.resblocks.0.attn.in_proj_weight")
    q = clip.visual.transformer.resblocks[0].attn.q_proj.weight
    assert q.shape == (1024, 1024) and torch.all(q == placeholder_value(in_proj))
    pos = keys.index("visual.positional_embedding")  # 24x24 + 1 as served; the model interpolates at 896 px
    assert clip.visual.positional_embedding.shape == (577, 1024) and torch.all(
        clip.visual.positional_embedding == placeholder_value(pos))
    assert isinstance(clip.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


@pytest.mark.slow
def test_swin_b_hub_generator_loads_offline(paper_config):
    """facebook/mask2former-swin-base-coco-panoptic: config.json with the published sizes
    (Mask2Former configs/coco/panoptic-segmentation/swin/maskformer2_swin_base_384_bs16_50ep.yaml:
    EMBED_DIM 128, DEPTHS [2, 2, 18, 2], NUM_HEADS [4, 8, 16, 32], WINDOW_SIZE 12,
    PRETRAIN_IMG_SIZE 384, DROP_PATH_RATE 0.3; Base-COCO: 100 queries, DEC_LAYERS 10, 133 classes)
    in the HF cache; the fetch rule and load_generator (`from_pretrained`) read it offline."""
    from fisa.models.generator import load_generator

    config_path, preset, cache = paper_config
    entry = preset["generators"]["swin_b"]
    folder = write_hub_generator(entry, cache)
    assert _fetch(config_path, "generator", "swin_b")["action"] == "downloaded"
    gen = load_generator("swin_b", entry, cache_dir=str(cache))
    c = gen.config
    assert (c.backbone_config.embed_dim, c.backbone_config.depths, c.backbone_config.num_heads,
            c.backbone_config.window_size, c.backbone_config.image_size) == (128, [2, 2, 18, 2], [4, 8, 16, 32], 12, 384)
    assert (c.num_queries, c.decoder_layers, c.num_labels) == (100, 10, 133)
    keys = list(torch.load(folder / "pytorch_model.bin", weights_only=True))
    state = gen.state_dict()
    for i in range(0, len(keys), 97):
        assert torch.all(state[keys[i]] == placeholder_value(i)), keys[i]


@pytest.mark.slow
def test_detectron2_r50_pkl_is_downloaded_converted_and_loaded(paper_config, tmp_path):
    """The paper preset's R50 generator: a detectron2 model-zoo pickle with detectron2's key
    names, served over HTTP under a model_final_<sha256 prefix>.pkl name, downloaded and checked
    by the fetch rule, converted (convert_d2_mask2former) and loaded by load_generator."""
    from test_download_helpers import FileServer
    from test_models_convert import d2_r50_state_dict

    from fisa.models.generator import load_generator

    config_path, preset, cache = paper_config
    d2 = d2_r50_state_dict(seed=1)
    payload = pickle.dumps({"model": d2, "__author__": "Detectron2 Model Zoo"})
    served = tmp_path / "served"
    served.mkdir()
    name = f"model_final_{hashlib.sha256(payload).hexdigest()[:6]}.pkl"
    (served / name).write_bytes(payload)
    with FileServer(served) as srv:
        cfg = yaml.safe_load(config_path.read_text())
        cfg["presets"]["paper"]["generators"]["r50"]["url"] = f"{srv.url}/{name}"
        config_path.write_text(yaml.safe_dump(cfg))
        record = _fetch(config_path, "generator", "r50")
    assert record["action"] == "converted"
    gen = load_generator("r50", cfg["presets"]["paper"]["generators"]["r50"], cache_dir=str(cache))
    state = gen.state_dict()
    stem = torch.as_tensor(d2["backbone.stem.conv1.weight"])
    hf_stem = next(v for k, v in state.items() if k.endswith("embedder.convolution.weight"))
    assert torch.equal(hf_stem, stem)
    q = next(v for k, v in state.items() if k.endswith("decoder.layers.0.self_attn.q_proj.weight"))
    fused = torch.as_tensor(d2["sem_seg_head.predictor.transformer_self_attention_layers.0.self_attn.in_proj_weight"])
    assert torch.equal(q, fused[:256])
