"""`python -m fisa.engine.pretrain_clip`: the small preset's "pre-trained" tiny CLIP.

    python -m fisa.engine.pretrain_clip --config config.yaml --preset small \
        --backbone vit_l14_336 --output resources/small/checkpoints/clip/vit_l14_336.pt

At paper scale CLIP comes pre-trained (`pretrained: openai`). The small preset's tiny open_clip
models (`fisa-tiny-vit-*`) would otherwise be random: their text embeddings are nearly parallel
(mean pairwise cosine ~0.94 over the ADE-150 vocabulary), so every region is classified as one of
a few "hub" classes and no method can score. This module is the analogue of `train_generator`
for CLIP: a short contrastive image-text pre-training (open_clip's own `ClipLoss`) on rendered
class appearances.

Data: the classes that the synthetic stand-ins show (`fisa.data.synthetic.active_classes` over
every registry dataset: COCO's training classes AND the evaluation sets' novel ones, as web
pre-training sees every concept name), each rendered alone on a background with the scenes'
own drawing code (`appearance`, `shape_mask`, `texture_fill`): a thing as a shape at a random
position/size (on a plain or a stuff-textured background), stuff as a textured region. Captions
are the class name (a random synonym) in a random prompt template of the model's template set
(`fisa/models/prompt_templates.json`). It never sees an evaluation image. Deterministic from
the seed. Writes the open_clip state dict (fused attention, open_clip's layout) atomically and
`<output>.json` with what was done (iterations, final loss, held-out zero-shot accuracy, the
text-embedding spread).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from fisa.models.clip_backbone import harness_clip_path, split_attention
from fisa.utils.io import atomic_torch_save, atomic_write_json

log = logging.getLogger("fisa.pretrain_clip")

DEFAULTS = {"iterations": 300, "batch_size": 48, "lr": 2.0e-3, "image_size": 64, "templates": "fcclip"}
HELD_OUT_PER_CLASS = 4


def pretraining_classes() -> list[tuple[str, list[str], bool]]:
    """(display name, synonyms, drawn as a thing) of every class some synthetic stand-in shows,
    sorted by name; synonyms are the union over the datasets' vocabularies."""
    from fisa.data.registry import get_meta, list_datasets
    from fisa.data.synthetic import active_classes

    by_name: dict[str, tuple[set, bool]] = {}
    for name in list_datasets():
        meta = get_meta(name)
        if not meta.classes:  # referring sets have no vocabulary
            continue
        stuff, things = active_classes(name)
        for c in stuff + things:
            syns, _ = by_name.setdefault(c.name, (set(), c.thing))
            syns.update(s.lower() for s in meta.classes[c.index])
    return [(n, sorted(s, key=lambda x: (x != n, x)), t) for n, (s, t) in sorted(by_name.items())]


def render_class_image(rng: np.random.Generator, name: str, thing: bool, size: int,
                       stuff_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size, 3) uint8 image showing class `name`, drawn as the scenes draw it, and
    the class's region (bool (size, size)).

    A thing: its shape (half-size 6..size/2.6) at a random position, on a plain grey-ish
    background or on the texture of a random stuff class (things lie on stuff in the scenes).
    Stuff: its texture over the whole image, or over its top/bottom part (>= 1/2 of the rows)
    with a plain background elsewhere. Plus the scenes' pixel noise.
    """
    from fisa.data.synthetic_scenes import appearance, shape_mask, texture_fill

    a = appearance(name)
    h = w = size
    plain = np.empty((h, w, 3), dtype=np.uint8)
    plain[:] = rng.integers(60, 200, size=3)
    if thing:
        others = [s for s in stuff_names if s != name]
        if others and rng.random() < 0.5:
            b = appearance(others[int(rng.integers(len(others)))])
            image = texture_fill(b.texture, h, w, b)
        else:
            image = plain
        r = rng.uniform(6, size / 2.6)
        m = shape_mask(a.shape, h, w, rng.uniform(r, h - r), rng.uniform(r, w - r), r)
        image[m] = a.colour
        region = m
    else:
        image = plain
        tex = texture_fill(a.texture, h, w, a)
        u = rng.random()
        split = int(rng.integers(h // 2, h + 1))
        rows = slice(0, h) if u < 0.4 else (slice(0, split) if u < 0.7 else slice(h - split, h))
        image[rows] = tex[rows]
        region = np.zeros((h, w), dtype=bool)
        region[rows] = True
    noise = rng.normal(0, 5, size=image.shape)
    return np.clip(image.astype(np.float64) + noise, 0, 255).astype(np.uint8), region


def _to_tensor(images: list[np.ndarray], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 HWC images -> normalised [B, 3, H, W] (CLIP mean/std, as FisaModel feeds CLIP)."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return (x - mean) / std


def _mask_logits(regions: list[np.ndarray]) -> torch.Tensor:
    """bool (H, W) regions -> mask logits [B, 1, H, W] (+1 inside, -1 outside)."""
    return torch.from_numpy(np.stack(regions)).float().mul(2).sub(1).unsqueeze(1)


def _embed(model: torch.nn.Module, pixels: torch.Tensor, regions: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(image embeddings [B, D], region embeddings [B, D]) from ONE pass of the vision tower:
    [CLS] sees the whole image; one mask token (FISA's mask attention) sees the class region."""
    from fisa.models.mask_attention import encode_with_mask_tokens

    # the regions are exact +-1 logits at the CLIP input's own resolution: every Eq. 5 rule agrees
    enc = encode_with_mask_tokens(model.visual, pixels, _mask_logits(regions), {"rule": "maskclip", "threshold": 0.5})
    return F.normalize(enc["cls_embedding"], dim=-1), F.normalize(enc["region_embeddings"][:, 0], dim=-1)


def fuse_split_state_dict(state: dict) -> dict:
    """A state dict of a model with `SplitAttention` blocks -> open_clip's own layout (fused
    in_proj_weight [3W, W] / in_proj_bias [3W]), loadable by `open_clip.create_model`."""
    out = {}
    for k, v in state.items():
        if ".attn.q_proj." in k:
            stem, kind = k.split(".attn.q_proj.")
            out[f"{stem}.attn.in_proj_{kind}"] = torch.cat(
                [state[f"{stem}.attn.{p}_proj.{kind}"] for p in ("q", "k", "v")])
        elif ".attn.k_proj." in k or ".attn.v_proj." in k:
            continue
        else:
            out[k] = v
    return out


def pretrain_clip(backbone_entry: dict, out_path: str | Path, seed: int = 0, iterations: int | None = None,
                  batch_size: int | None = None, lr: float | None = None) -> dict:
    """Contrastively pre-train the tiny open_clip model of `backbone_entry` and save it.

    backbone_entry: a preset's backbone entry {model, image_size, pretrain: {iterations,
    batch_size, lr, templates?}, ...}; arguments given here override `pretrain`.
    The model starts from the random init of `seed` (as `create_clip(init_seed=seed)`), sees
    `iterations` batches of `batch_size` distinct classes (one render + one caption each), AdamW
    with warmup + cosine decay. Saves open_clip's state dict to `out_path` and returns the
    record also written to `<out_path>.json`.
    """
    from fisa.models.clip_backbone import register_model_configs
    from fisa.models.text import encode_class_names, get_tokenizer, prompt_templates

    register_model_configs()
    cfg = {**DEFAULTS, **{k: v for k, v in (backbone_entry.get("pretrain") or {}).items() if v is not None}}
    for key, val in (("iterations", iterations), ("batch_size", batch_size), ("lr", lr)):
        if val is not None:
            cfg[key] = val
    if int(cfg["iterations"]) < 1 or int(cfg["batch_size"]) < 2 or float(cfg["lr"]) <= 0:
        raise ValueError(f"pretrain: need iterations >= 1, batch_size >= 2, lr > 0, got {cfg}")
    name = backbone_entry.get("model")
    if name not in open_clip.list_models():
        raise ValueError(f"backbone model: unknown open_clip model {name!r}")
    size = int(backbone_entry.get("image_size") or cfg["image_size"])
    templates = prompt_templates(cfg["templates"])
    classes = pretraining_classes()
    names = [c[0] for c in classes]
    stuff_names = [c[0] for c in classes if not c[2]]
    bs = min(int(cfg["batch_size"]), len(classes))  # distinct classes per batch: no false negatives
    t0 = time.perf_counter()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same random init as create_clip(init_seed=seed)
        root_logger, level = logging.getLogger(), logging.getLogger().level
        root_logger.setLevel(logging.ERROR)  # open_clip warns that random weights are random
        try:
            model = open_clip.create_model(name, pretrained=None)
        finally:
            root_logger.setLevel(level)
        # Train in FISA's layout (split q/k/v) so the region term can use its mask tokens;
        # saved fused again (fuse_split_state_dict), open_clip's own layout.
        split_attention(model.visual)
        tokenizer = get_tokenizer(name)
        mean = torch.tensor(getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
        rng = np.random.default_rng([seed, 2024])
        opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]), weight_decay=0.05, fused=True)
        n_it, warm = int(cfg["iterations"]), max(1, int(cfg["iterations"]) // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: (i + 1) / warm if i < warm else 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, n_it - warm))))
        loss_fn = ClipLoss()
        model.train()
        losses = []
        for _ in range(n_it):
            pick = rng.choice(len(classes), size=bs, replace=False)
            images, regions = zip(*(render_class_image(rng, classes[i][0], classes[i][2], size, stuff_names)
                                    for i in pick))
            texts = []
            for i in pick:
                syns = classes[i][1]
                texts.append(templates[int(rng.integers(len(templates)))].format(syns[int(rng.integers(len(syns)))]))
            image_features, region_features = _embed(model, _to_tensor(images, mean, std), regions)
            text_features = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
            logit_scale = model.logit_scale.exp()
            # CLIP's image-text loss, plus the same loss on the class region's mask token: the
            # small preset classifies regions through mask tokens, and a tiny CLIP trained on
            # whole images only does not transfer to them (measured: docs/models.md)
            loss = 0.5 * (loss_fn(image_features, text_features, logit_scale)
                          + loss_fn(region_features, text_features, logit_scale))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():  # CLIP's clamp of the learned temperature (at most 100)
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(float(loss.detach()))
        train_s = time.perf_counter() - t0

        # Held-out check: fresh renders (another stream) classified zero-shot among all classes
        # with the template-averaged text embeddings, exactly as FisaModel builds its vocabulary.
        model.eval()
        held = np.random.default_rng([seed, 7])
        with torch.no_grad():
            text = encode_class_names(model, tokenizer, [c[1] for c in classes], templates)  # [C, D]
            labels = [i for i in range(len(classes)) for _ in range(HELD_OUT_PER_CLASS)]
            images, regions = zip(*(render_class_image(held, classes[i][0], classes[i][2], size, stuff_names)
                                    for i in labels))
            img, reg = _embed(model, _to_tensor(images, mean, std), regions)  # [N, D] each
            acc = float(((img @ text.T).argmax(1) == torch.tensor(labels)).float().mean())
            region_acc = float(((reg @ text.T).argmax(1) == torch.tensor(labels)).float().mean())
            spread = _mean_pairwise_cosine(text)
    state = fuse_split_state_dict({k: v.detach().clone() for k, v in model.state_dict().items()})
    out_path = Path(out_path)
    atomic_torch_save(out_path, state)
    record = {"model": name, "seed": seed, "iterations": n_it, "batch_size": bs, "lr": float(cfg["lr"]),
              "templates": cfg["templates"] if isinstance(cfg["templates"], str) else templates,
              "image_size": size, "classes": len(classes), "final_loss": float(np.mean(losses[-10:])),
              "first_loss": losses[0], "zero_shot_accuracy": acc, "region_zero_shot_accuracy": region_acc, "chance": 1.0 / len(classes),
              "held_out_images": len(labels), "mean_pairwise_cosine": spread,
              "train_seconds": round(train_s, 2), "weights": out_path.name}
    atomic_write_json(out_path.with_suffix(out_path.suffix + ".json"), record)
    log.info("pretrained %s: loss %.3f -> %.3f, zero-shot %.1f%% (regions %.1f%%, chance %.1f%%), text cosine %.2f, "
             "%.1f s", name, losses[0], record["final_loss"], 100 * acc, 100 * region_acc, 100 / len(classes), spread,
             train_s)
    return record


def _mean_pairwise_cosine(emb: torch.Tensor) -> float:
    """Mean cosine over distinct pairs of rows of L2-normalised `emb` [C, D]."""
    c = emb.shape[0]
    sim = emb @ emb.T
    return float((sim.sum() - sim.diagonal().sum()) / (c * (c - 1)))


def main(argv: list[str] | None = None) -> int:
    from fisa.config import load_config
    from fisa.engine.cli import preset_entry

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--backbone", required=True, help="logical backbone name of the preset (e.g. vit_l14_336)")
    ap.add_argument("--output", default=None, help="default: <cache_dir>/clip/<backbone>.pt")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    found = preset_entry(load_config(args.config), args.preset, "backbone", args.backbone)
    if found is None:
        return 2
    preset, entry = found
    out = args.output or harness_clip_path(preset["cache_dir"], args.backbone)
    try:
        pretrain_clip(entry, out, seed=args.seed)
    except ValueError as e:
        print(f"error: backbone {args.backbone!r}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
