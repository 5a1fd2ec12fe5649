"""The model variants (SPEC Table 3, Fig. 2a), read from the table `variants.yaml` beside this file.

The table is the only place a variant is defined: which parameter groups train, which optional
modules exist (SEVE + Distribution Adapter, LoRA) and how the model is evaluated (the generator's
or the ground truth's masks; CLIP's or the ground truth's classes). `FisaModel` (modules, freezing,
forward), the engine's evaluation and the config schema's `variant` enum all read it.

This module imports no torch at import time: `fisa.config` reads `variant_names()` while
Snakemake parses the workflow.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from torch import nn

TABLE = Path(__file__).with_name("variants.yaml")
# Parameter groups of fisa.models.parameters.GROUPS (kept here too so that reading the table
# needs no torch; tests check the two agree).
PARAMETER_GROUPS = ("query_projection", "seve", "distribution_adapter", "no_object", "lora",
                    "clip_visual", "text_encoder", "mask_generator")
# CLIP's own temperature never trains (the model's logit scale is a buffer).
NEVER_TRAINED = ("clip.logit_scale", "clip.logit_bias")


@dataclass(frozen=True)
class Variant:
    """One row of the variant table."""
    name: str
    description: str
    trains: tuple[str, ...]
    seve: bool
    lora: bool
    proposals: str   # generator | oracle
    classes: str     # model | oracle

    @property
    def trained(self) -> bool:
        return bool(self.trains)

    @property
    def oracle(self) -> bool:
        """Evaluation passes the ground truth to the model (oracle masks or classes)."""
        return self.proposals == "oracle" or self.classes == "oracle"


@functools.cache
def variant_table() -> dict[str, Variant]:
    """name -> Variant, in the table's order; a malformed entry fails naming the table and key."""
    raw = yaml.safe_load(TABLE.read_text())
    out = {}
    fields = {"description", "trains", "seve", "lora", "proposals", "classes"}
    for name, entry in raw.items():
        where = f"{TABLE}: {name}"
        if not isinstance(entry, dict) or set(entry) != fields:
            raise ValueError(f"{where}: expected exactly the keys {sorted(fields)}")
        unknown = set(entry["trains"]) - set(PARAMETER_GROUPS)
        if unknown:
            raise ValueError(f"{where}.trains: unknown parameter groups {sorted(unknown)} "
                             f"(known: {list(PARAMETER_GROUPS)})")
        if entry["proposals"] not in ("generator", "oracle") or entry["classes"] not in ("model", "oracle"):
            raise ValueError(f"{where}: proposals must be generator|oracle and classes model|oracle")
        if ("lora" in entry["trains"]) != bool(entry["lora"]):
            raise ValueError(f"{where}: `lora: true` exactly when the lora group trains")
        out[name] = Variant(name=name, description=str(entry["description"]), trains=tuple(entry["trains"]),
                            seve=bool(entry["seve"]), lora=bool(entry["lora"]), proposals=entry["proposals"],
                            classes=entry["classes"])
    return out


def variant_names() -> list[str]:
    """Every variant name, in the table's order (the config schema's enum)."""
    return list(variant_table())


VARIANTS = tuple(variant_names())


def get_variant(variant: str | Variant) -> Variant:
    """The table entry of `variant`, or a ValueError listing the known ones."""
    if isinstance(variant, Variant):
        return variant
    table = variant_table()
    if variant not in table:
        raise ValueError(f"variant: unknown {variant!r}; expected one of {list(table)} ({TABLE})")
    return table[variant]


def check_variant(variant: str) -> str:
    """Return `variant` or raise a ValueError listing the known ones."""
    return get_variant(variant).name


def inject_lora(visual: nn.Module, rank: int) -> None:
    """peft LoRA (alpha = rank, so scaling 1; no dropout) on every vision block's q/k/v/out projection.

    Works because `SplitAttention` exposes the projections as plain nn.Linear layers; peft's own
    nn.MultiheadAttention support does not cover open_clip's fused in_proj as cleanly.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"model.lora_rank: the lora variant needs a positive integer rank, got {rank!r}")
    cfg = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none",
                     target_modules=r".*(resblocks|blocks)\.\d+\.attn\.(q_proj|k_proj|v_proj|out_proj)")
    inject_adapter_in_model(cfg, visual)


def is_query_projection(name: str) -> bool:
    """A vision block's query projection (weight or bias), not a LoRA factor."""
    return name.startswith(("clip.visual.transformer.resblocks.", "clip.visual.trunk.blocks.")) \
        and ".attn.q_proj." in name and "lora_" not in name


def is_text_tower(name: str) -> bool:
    """CLIP's text side (everything of `clip` outside `clip.visual`, except the logit scale/bias)."""
    return name.startswith("clip.") and not name.startswith("clip.visual.") and name not in NEVER_TRAINED


def apply_variant(model: nn.Module, variant: str | Variant) -> None:
    """Set `requires_grad` on `model` (a FisaModel): a parameter trains when its group
    (`fisa.models.parameters.parameter_group`) is in the variant's `trains`."""
    from fisa.models.parameters import parameter_group

    spec = get_variant(variant)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in NEVER_TRAINED and parameter_group(name) in spec.trains)
