"""Text side: prompt templates (a data file) and class-name embeddings with CLIP's text tower."""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

TEMPLATES_FILE = Path(__file__).parent / "prompt_templates.json"


@lru_cache(maxsize=None)
def _all_templates() -> dict[str, list[str]]:
    data = json.loads(TEMPLATES_FILE.read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def prompt_templates(name_or_list: str | list[str]) -> list[str]:
    """Templates by name from `prompt_templates.json` ("name_only", "fcclip", "single"), or a literal list."""
    if isinstance(name_or_list, (list, tuple)):
        templates = list(name_or_list)
    else:
        sets = _all_templates()
        if name_or_list not in sets:
            raise ValueError(f"model.prompt_templates: unknown template set {name_or_list!r} "
                             f"(known in {TEMPLATES_FILE}: {sorted(sets)})")
        templates = sets[name_or_list]
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise ValueError(f"model.prompt_templates: every template needs one '{{}}', got {bad or templates!r}")
    return templates


SYNONYM_MODES = ("average", "first", "joined")
VOID_MODES = ("learned", "other_text")
VOID_TEXT = "other"  # MaskCLIP's void class name (maskclip/utils/get_vocab.py)


def apply_synonym_mode(class_names: list[list[str]], mode: str) -> list[list[str]]:
    """The names each class is encoded with (model.synonyms): "average" keeps every synonym
    (their embeddings are averaged, FC-CLIP); "first" keeps the display name; "joined" makes one
    name "syn1, syn2, ..." (MaskCLIP tokenizes the dataset's unsplit name, e.g. "road, route")."""
    if mode == "average":
        return class_names
    if mode == "first":
        return [[syns[0]] for syns in class_names]
    if mode == "joined":
        return [[", ".join(syns)] for syns in class_names]
    raise ValueError(f"model.synonyms: {mode!r} is not one of {SYNONYM_MODES}")


def validate_class_names(class_names) -> list[list[str]]:
    """Check `class_names` is a non-empty list of non-empty synonym lists of strings."""
    if not isinstance(class_names, (list, tuple)) or not class_names:
        raise ValueError("class_names: expected a non-empty list of synonym lists")
    out = []
    for i, syns in enumerate(class_names):
        if isinstance(syns, str):
            syns = [syns]
        if not syns or not all(isinstance(s, str) and s for s in syns):
            raise ValueError(f"class_names[{i}]: expected a non-empty list of non-empty strings, got {syns!r}")
        out.append(list(syns))
    return out


def encode_class_names(clip: nn.Module, tokenizer, class_names: list[list[str]], templates: list[str],
                       batch_size: int = 1024) -> torch.Tensor:
    """Text embeddings [C, D]: per synonym, the mean of its normalised template embeddings
    (re-normalised); per class, the mean over synonyms, normalised again (FC-CLIP practice)."""
    texts, owner = [], []
    for c, syns in enumerate(class_names):
        for s, name in enumerate(syns):
            for t in templates:
                texts.append(t.format(name))
                owner.append((c, s))
    device = next(clip.parameters()).device
    embs = []
    for i in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[i:i + batch_size]).to(device)
        embs.append(F.normalize(clip.encode_text(tokens), dim=-1))
    # float32 whatever autocast is active: the cached vocabulary outlives the autocast region
    emb = torch.cat(embs).float().view(-1, len(templates), embs[0].shape[-1])  # [sum synonyms, T, D]
    syn_emb = F.normalize(emb.mean(1), dim=-1)  # [S, D]
    # class index of every synonym, from the lists (not repeat_interleave: its size would be data)
    class_idx = torch.tensor([c for c, syns in enumerate(class_names) for _ in syns], device=device)
    cls_emb = torch.zeros(len(class_names), syn_emb.shape[1], device=device, dtype=syn_emb.dtype)
    cls_emb = cls_emb.index_add(0, class_idx, syn_emb)
    return F.normalize(cls_emb, dim=-1)


def text_tower_fingerprint(clip: nn.Module) -> str | None:
    """sha256 of every non-visual tensor of `clip` (names, dtypes, bytes): the identity of the text
    tower's weights, whatever backbone, tag, seed or fine-tuning produced them. None on meta."""
    h = hashlib.sha256()
    for name, t in clip.state_dict().items():
        if name.startswith("visual."):
            continue
        if t.is_meta:
            return None
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cached_class_embeddings(cache_dir: str | Path, fingerprint: str, clip: nn.Module, tokenizer,
                            class_names: list[list[str]], templates: list[str]) -> torch.Tensor:
    """`encode_class_names`, read from `<cache_dir>/<key>.pt` when an earlier process wrote it.

    key = sha256 of (text-tower fingerprint, class lists, templates, autocast dtype): a vocabulary
    is encoded once per backbone's weights (at ViT-L size and 14 templates x synonyms, minutes of
    CPU per vocabulary). Written atomically; loaded onto the tower's device."""
    from fisa.utils.io import atomic_path

    device = next(clip.parameters()).device
    autocast = str(torch.get_autocast_dtype(device.type)) if torch.is_autocast_enabled(device.type) else "fp32"
    key = hashlib.sha256(json.dumps({"text_tower": fingerprint, "classes": class_names, "templates": templates,
                                     "autocast": autocast}).encode()).hexdigest()
    path = Path(cache_dir) / f"{key}.pt"
    if path.exists():
        return torch.load(path, map_location=device, weights_only=True)
    emb = encode_class_names(clip, tokenizer, class_names, templates)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(emb.detach().cpu(), tmp)
    return emb


def get_tokenizer(model_name: str):
    """open_clip's tokenizer for `model_name` (BPE vocabulary ships with open_clip: offline)."""
    return open_clip.get_tokenizer(model_name)
