"""Convert the original (detectron2) Mask2Former ResNet-50 COCO-panoptic checkpoint to transformers.

    python -m fisa.models.convert_d2_mask2former --pkl model_final_94dc52.pkl --out DIR

The hub has Swin Mask2Formers but no ResNet-50 one, so Tab. 4's R50 generator comes from the
original model zoo (`maskformer2_R50_bs16_50ep`, a pickled {"model": {name: ndarray}}). The
architecture is `r50_config()`: a ResNet-50 backbone in transformers' layout (stride in the 3x3
conv, as detectron2's STRIDE_IN_1X1=False; BN with running statistics for detectron2's frozen BN),
and Mask2Former's COCO-panoptic heads (256-d, 6 deformable encoder layers, 9 decoder layers,
100 queries, 133 classes). Every target tensor must be filled and every source tensor used (except
`IGNORED` buffers), with matching shapes, or the conversion fails naming the key. The result is
written with `save_pretrained`, so `load_generator` reads it like a harness generator.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from fisa.utils import safe_pickle

IGNORED = ("pixel_mean", "pixel_std")
HF_BACKBONE = "model.pixel_level_module.encoder"
HF_PIXEL_DECODER = "model.pixel_level_module.decoder"
HF_TRANSFORMER = "model.transformer_module"
D2_PIXEL_DECODER = "sem_seg_head.pixel_decoder"
D2_PREDICTOR = "sem_seg_head.predictor"
BN = ("weight", "bias", "running_mean", "running_var")


def r50_config(num_labels: int = 133):
    """Mask2FormerConfig of the COCO-panoptic R50 model (detectron2 `maskformer2_R50_bs16_50ep`)."""
    from transformers import Mask2FormerConfig, ResNetConfig

    backbone = ResNetConfig(embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
                            layer_type="bottleneck", hidden_act="relu", downsample_in_first_stage=False,
                            downsample_in_bottleneck=False, out_features=["stage1", "stage2", "stage3", "stage4"])
    return Mask2FormerConfig(backbone_config=backbone, num_labels=num_labels, num_queries=100, hidden_dim=256,
                             feature_size=256, mask_feature_size=256, encoder_layers=6, decoder_layers=10,
                             num_attention_heads=8, dim_feedforward=2048, encoder_feedforward_dim=1024)


def key_map(config) -> list[tuple[str, str]]:
    """(detectron2 key, transformers key) pairs for every tensor copied one to one."""
    pairs: list[tuple[str, str]] = []

    def bn(src: str, dst: str):
        pairs.extend((f"{src}.{k}", f"{dst}.{k}") for k in BN)

    def wb(src: str, dst: str):
        pairs.extend([(f"{src}.weight", f"{dst}.weight"), (f"{src}.bias", f"{dst}.bias")])

    # ResNet-50 backbone
    pairs.append(("backbone.stem.conv1.weight", f"{HF_BACKBONE}.embedder.embedder.convolution.weight"))
    bn("backbone.stem.conv1.norm", f"{HF_BACKBONE}.embedder.embedder.normalization")
    for s, depth in enumerate(config.backbone_config.depths):
        for b in range(depth):
            src, dst = f"backbone.res{s + 2}.{b}", f"{HF_BACKBONE}.encoder.stages.{s}.layers.{b}"
            if b == 0:
                pairs.append((f"{src}.shortcut.weight", f"{dst}.shortcut.convolution.weight"))
                bn(f"{src}.shortcut.norm", f"{dst}.shortcut.normalization")
            for j in range(3):
                pairs.append((f"{src}.conv{j + 1}.weight", f"{dst}.layer.{j}.convolution.weight"))
                bn(f"{src}.conv{j + 1}.norm", f"{dst}.layer.{j}.normalization")
    # pixel decoder (multi-scale deformable attention encoder + FPN-style lateral/output convs)
    src, dst = D2_PIXEL_DECODER, HF_PIXEL_DECODER
    for i in range(3):
        for j in range(2):
            wb(f"{src}.input_proj.{i}.{j}", f"{dst}.input_projections.{i}.{j}")
    pairs.append((f"{src}.transformer.level_embed", f"{dst}.level_embed"))
    for i in range(config.encoder_layers):
        s_, d_ = f"{src}.transformer.encoder.layers.{i}", f"{dst}.encoder.layers.{i}"
        for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            wb(f"{s_}.self_attn.{name}", f"{d_}.self_attn.{name}")
        wb(f"{s_}.norm1", f"{d_}.self_attn_layer_norm")
        wb(f"{s_}.linear1", f"{d_}.fc1")
        wb(f"{s_}.linear2", f"{d_}.fc2")
        wb(f"{s_}.norm2", f"{d_}.final_layer_norm")
    wb(f"{src}.mask_features", f"{dst}.mask_projection")
    for name in ("adapter_1", "layer_1"):
        pairs.append((f"{src}.{name}.weight", f"{dst}.{name}.0.weight"))
        wb(f"{src}.{name}.norm", f"{dst}.{name}.1")
    # masked-attention transformer decoder (self-attention in_proj is split separately)
    src, dst = D2_PREDICTOR, f"{HF_TRANSFORMER}.decoder"
    for i in range(config.decoder_layers - 1):
        sa, ca, ffn = (f"{src}.transformer_{k}_layers.{i}" for k in ("self_attention", "cross_attention", "ffn"))
        d_ = f"{dst}.layers.{i}"
        wb(f"{sa}.self_attn.out_proj", f"{d_}.self_attn.out_proj")
        wb(f"{sa}.norm", f"{d_}.self_attn_layer_norm")
        pairs.extend([(f"{ca}.multihead_attn.in_proj_weight", f"{d_}.cross_attn.in_proj_weight"),
                      (f"{ca}.multihead_attn.in_proj_bias", f"{d_}.cross_attn.in_proj_bias")])
        wb(f"{ca}.multihead_attn.out_proj", f"{d_}.cross_attn.out_proj")
        wb(f"{ca}.norm", f"{d_}.cross_attn_layer_norm")
        wb(f"{ffn}.linear1", f"{d_}.fc1")
        wb(f"{ffn}.linear2", f"{d_}.fc2")
        wb(f"{ffn}.norm", f"{d_}.final_layer_norm")
    wb(f"{src}.decoder_norm", f"{dst}.layernorm")
    for i in range(3):
        wb(f"{src}.mask_embed.layers.{i}", f"{dst}.mask_predictor.mask_embedder.{i}.0")
    pairs.extend([(f"{src}.query_embed.weight", f"{HF_TRANSFORMER}.queries_embedder.weight"),
                  (f"{src}.query_feat.weight", f"{HF_TRANSFORMER}.queries_features.weight"),
                  (f"{src}.level_embed.weight", f"{HF_TRANSFORMER}.level_embed.weight")])
    wb(f"{src}.class_embed", "class_predictor")
    pairs.append(("criterion.empty_weight", "criterion.empty_weight"))
    return pairs


def convert_state_dict(d2: dict, config, target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a detectron2 Mask2Former state dict onto `target` (a transformers state dict, for names
    and shapes). Raises KeyError / ValueError naming any missing, unused or mis-shaped tensor."""
    src = {k: torch.as_tensor(np.asarray(v)) for k, v in d2.items() if k not in IGNORED}
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def put(s: str, d: str, t: torch.Tensor):
        if d not in target:
            raise KeyError(f"convert: target has no tensor {d!r} (for source {s!r})")
        if tuple(t.shape) != tuple(target[d].shape):
            raise ValueError(f"convert: {s} has shape {tuple(t.shape)}, {d} expects {tuple(target[d].shape)}")
        out[d] = t.to(target[d].dtype).clone()

    for s, d in key_map(config):
        if s not in src:
            if s == "criterion.empty_weight":  # a training buffer; keep transformers' own
                continue
            raise KeyError(f"convert: source checkpoint lacks {s!r}")
        put(s, d, src[s])
        used.add(s)
    width = config.hidden_dim
    for i in range(config.decoder_layers - 1):  # split the fused self-attention in_proj into q, k, v
        s = f"{D2_PREDICTOR}.transformer_self_attention_layers.{i}.self_attn"
        d = f"{HF_TRANSFORMER}.decoder.layers.{i}.self_attn"
        for kind in ("weight", "bias"):
            key = f"{s}.in_proj_{kind}"
            if key not in src:
                raise KeyError(f"convert: source checkpoint lacks {key!r}")
            fused = src[key]
            for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                put(key, f"{d}.{proj}.{kind}", fused[j * width:(j + 1) * width])
            used.add(key)
    unused = sorted(set(src) - used)
    if unused:
        raise KeyError(f"convert: {len(unused)} source tensors were not used: {unused[:8]}")
    missing = sorted(k for k in target if k not in out and not k.endswith("num_batches_tracked")
                     and k != "criterion.empty_weight")
    if missing:
        raise KeyError(f"convert: {len(missing)} target tensors were not filled: {missing[:8]}")
    return out


def load_d2_checkpoint(path: str | Path) -> dict:
    """The {name: array} model dict of a detectron2 .pkl (or .pth) checkpoint."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--pkl {path}: no such file")
    if path.suffix == ".pkl":
        data = safe_pickle.load(path, encoding="latin1")  # downloaded: data types only, never code
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
    model = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(model, dict):
        raise ValueError(f"{path}: expected a dict with a 'model' state dict, got {type(data).__name__}")
    return model


def convert_file(pkl: str | Path, out: str | Path, num_labels: int = 133):
    """Convert `pkl` and `save_pretrained` the Mask2Former to `out` (written to a temporary folder first)."""
    import shutil

    from transformers import Mask2FormerForUniversalSegmentation

    config = r50_config(num_labels)
    model = Mask2FormerForUniversalSegmentation(config)
    state = convert_state_dict(load_d2_checkpoint(pkl), config, model.state_dict())
    model.load_state_dict(state, strict=False)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pkl", required=True, help="detectron2 checkpoint (model_final_94dc52.pkl)")
    ap.add_argument("--out", required=True, help="output folder (save_pretrained)")
    ap.add_argument("--num-labels", type=int, default=133)
    args = ap.parse_args(argv)
    try:
        convert_file(args.pkl, args.out, args.num_labels)
    except (KeyError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
