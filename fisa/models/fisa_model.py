"""FisaModel: frozen mask generator -> Distribution Adapter -> CLIP mask classifier (with SEVE)."""
from __future__ import annotations

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from fisa.models.distribution_adapter import DistributionAdapter
from fisa.models.eva_backbone import vision_tower
from fisa.models.generator import generator_proposals
from fisa.models.loss import set_criterion
from fisa.models.mask_attention import encode_with_mask_tokens
from fisa.models.oracle import no_object_logits, oracle_class_logits, oracle_proposals
from fisa.models.seve import build_seve
from fisa.models.text import (VOID_MODES, VOID_TEXT, apply_synonym_mode, cached_class_embeddings, encode_class_names,
                              prompt_templates, text_tower_fingerprint,
                              validate_class_names)
from fisa.models.variants import apply_variant, get_variant, inject_lora


class FisaModel(nn.Module):
    """Every model of the paper; which parts exist and train, and how it is evaluated, is the
    variant's row of the variant table (`fisa/models/variants.yaml`, `self.spec`).

    Build it with `fisa.models.build_model(model_cfg, variant)`. Submodules: `clip` (open_clip
    CLIP, vision attention split into q/k/v), `generator` (Mask2Former), `seve` (SemanticGuidedAttention
    modules: {"shared": one} or {str(block index): one per block}, run in `seve_blocks`),
    `distribution_adapter`, `no_object_embedding`.
    """

    def __init__(self, clip: nn.Module, tokenizer, generator: nn.Module | None, model_cfg: dict, variant: str):
        super().__init__()
        self.spec = get_variant(variant)
        self.variant = self.spec.name
        self.model_cfg = model_cfg
        self.clip = clip
        self.tokenizer = tokenizer
        self.generator = generator
        visual = clip.visual
        tower = vision_tower(visual)
        blocks = tower.blocks
        width, embed_dim = tower.width, tower.output_dim
        self.patch_size = tower.patch_size
        self.num_proposals = int(model_cfg["num_proposals"])
        self.image_size = model_cfg["clip"]["image_size"]
        self.templates = prompt_templates(model_cfg["prompt_templates"])
        self.synonyms, self.void = model_cfg["synonyms"], model_cfg["void"]  # docs/choices.md
        apply_synonym_mode([["a"]], self.synonyms)  # fail early on an unknown mode
        if self.void not in VOID_MODES:
            raise ValueError(f"model.void: {self.void!r} is not one of {VOID_MODES}")
        self.patch_mask = dict(model_cfg["patch_mask"])  # Eq. 5 rule, see mask_attention.py
        # set by the training engine from `train.gradient_checkpointing` (a memory lever, same values)
        self.gradient_checkpointing = False
        self.seve = nn.ModuleDict()
        self.seve_blocks: list[int] = []  # the blocks SEVE runs in (model.seve.layers)
        self.distribution_adapter = None
        if self.spec.seve:
            self.seve, self.seve_blocks = build_seve(model_cfg["seve"], [b.attn.num_heads for b in blocks],
                                                     width, embed_dim)
            layers = int(model_cfg["adapter_layers"])
            if not 0 <= layers <= 8:
                raise ValueError(f"model.adapter_layers: expected 0-8, got {layers}")
            if layers:
                self.distribution_adapter = DistributionAdapter(layers, int(model_cfg["adapter_channels"]),
                                                                int(model_cfg["adapter_kernel_size"]))
        # No-object logit = scale * <normalised region, no_object_embedding>. Zero at init: the
        # untrained baseline never prefers "no object" over a class (CLIP cosines are > 0).
        self.no_object_embedding = nn.Parameter(torch.zeros(embed_dim))
        scale = model_cfg["logit_scale"]
        self.register_buffer("logit_scale", torch.tensor(float(scale) if scale is not None
                                                         else float(clip.logit_scale.detach().exp())), persistent=False)
        mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        self.register_buffer("clip_mean", torch.tensor(mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("clip_std", torch.tensor(std).view(1, 3, 1, 1) * 255, persistent=False)
        self._vocabulary_cache: dict = {}
        # <cache_dir>/text_embeddings when set (fisa.engine.run_model.build_run_model): vocabularies
        # encoded once per text-tower weights, across processes; None: in memory only
        self.text_cache_dir: Path | None = None
        self._text_fingerprint: str | None = None
        if self.spec.lora:
            inject_lora(visual, model_cfg["lora_rank"])
        apply_variant(self, self.spec)
        if self.void != "learned":  # the void class is CLIP's text for "other": nothing to learn
            self.no_object_embedding.requires_grad_(False)
        self.train(False)

    # ----------------------------------------------------------------- modes
    @property
    def generator_trainable(self) -> bool:
        return "mask_generator" in self.spec.trains

    @property
    def text_trainable(self) -> bool:
        return "text_encoder" in self.spec.trains

    @property
    def proposals_cacheable(self) -> bool:
        """True when the generator is frozen, so the engine may cache `generate_proposals` output."""
        return not self.generator_trainable and self.spec.proposals == "generator"

    def train(self, mode: bool = True):
        """Like nn.Module.train, but a frozen generator stays in eval mode (no BN/dropout drift)."""
        super().train(mode)
        if self.generator is not None and not self.generator_trainable:
            self.generator.eval()
        if mode and self.text_trainable:
            self._vocabulary_cache.clear()
            self._text_fingerprint = None  # the tower's weights are about to change
        return self

    # ----------------------------------------------------------------- text
    def encode_vocabulary(self, class_names: list[list[str]]) -> torch.Tensor:
        """Text embeddings [C, D] of a vocabulary (synonym lists), prompt templates averaged,
        L2-normalised. Cached per vocabulary; recomputed with gradients only while the text tower
        trains (a variant whose `trains` has text_encoder, in train mode)."""
        class_names = apply_synonym_mode(validate_class_names(class_names), self.synonyms)
        if self.text_trainable and self.training and torch.is_grad_enabled():
            return encode_class_names(self.clip, self.tokenizer, class_names, self.templates)
        key = (str(self.clip_mean.device), tuple(tuple(s) for s in class_names))  # survives model.to(device)
        if key not in self._vocabulary_cache:
            with torch.no_grad():
                if self.text_cache_dir is not None:  # on disk, across processes (fisa.models.text)
                    if self._text_fingerprint is None:
                        self._text_fingerprint = text_tower_fingerprint(self.clip)
                if self.text_cache_dir is not None and self._text_fingerprint is not None:
                    self._vocabulary_cache[key] = cached_class_embeddings(
                        self.text_cache_dir, self._text_fingerprint, self.clip, self.tokenizer, class_names,
                        self.templates)
                else:
                    self._vocabulary_cache[key] = encode_class_names(self.clip, self.tokenizer, class_names,
                                                                     self.templates)
        return self._vocabulary_cache[key]

    # ----------------------------------------------------------------- vision
    def generate_proposals(self, images: torch.Tensor) -> torch.Tensor:
        """images float [B, 3, H, W] 0..255 -> mask logits [B, Q, ceil(H/4), ceil(W/4)] of the generator
        (no grad and eval mode unless the variant adapts the generator)."""
        if self.generator is None:
            raise RuntimeError("this model was built without a mask generator")
        if self.generator_trainable and self.training:
            return generator_proposals(self.generator, images, self.num_proposals)
        with torch.no_grad():
            return generator_proposals(self.generator, images, self.num_proposals)

    def clip_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """images 0..255 [B, 3, H, W] -> CLIP input [B, 3, S, S] (bilinear resize to
        model.clip.image_size, CLIP mean/std). With image_size null the native size is used,
        cropped to a multiple of the patch size."""
        x = images.float()
        if self.image_size:
            s = (int(self.image_size),) * 2
            if tuple(x.shape[-2:]) != s:
                x = F.interpolate(x, size=s, mode="bilinear", align_corners=False, antialias=True)
        else:
            p = self.patch_size
            x = x[..., : x.shape[-2] // p[0] * p[0], : x.shape[-1] // p[1] * p[1]]
        return (x - self.clip_mean) / self.clip_std

    def classify(self, region_embeddings: torch.Tensor, vocabulary: torch.Tensor) -> torch.Tensor:
        """region_embeddings [B, Q, D], vocabulary [C, D] -> class logits [B, Q, C+1] (cosine x logit scale;
        last = no object). model.void "learned": the no-object logit uses `no_object_embedding`;
        "other_text": in training, the text embedding of "other" (MaskCLIP's void class), in
        evaluation no void class at all (logit -inf), as MaskCLIP evaluates without "other"."""
        r = F.normalize(region_embeddings, dim=-1)
        logits = r @ vocabulary.to(r.dtype).T
        if self.void == "learned":
            void = r @ self.no_object_embedding.to(r.dtype)
        elif self.training:
            void = r @ self.encode_vocabulary([[VOID_TEXT]])[0].to(r.dtype)
        else:
            void = torch.full(r.shape[:-1], float("-inf"), device=r.device, dtype=r.dtype)
        return self.logit_scale * torch.cat([logits, void.unsqueeze(-1)], dim=-1)

    def forward(self, images: torch.Tensor, vocabulary: torch.Tensor, proposals: torch.Tensor | None = None,
                targets: list[dict] | None = None) -> dict:
        """images float [B, 3, H, W] 0..255; vocabulary [C, D] from encode_vocabulary; proposals: cached
        generator mask logits [B, Q, h, w] (else generated); targets: ground truth for the oracle modes.

        Returns {"mask_logits" [B, Q, h, w] (after the adapter), "class_logits" [B, Q, C+1],
        "region_embeddings" [B, Q, D], "proposals" [B, Q, h, w] (the adapter's input)}.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected float [B, 3, H, W] in 0..255, got shape {tuple(images.shape)}")
        if vocabulary.dim() != 2:
            raise ValueError(f"vocabulary: expected [C, D] text embeddings, got shape {tuple(vocabulary.shape)}")
        valid = None
        if self.spec.proposals == "oracle":
            proposals, valid = oracle_proposals(targets, tuple(images.shape[-2:]))
        elif proposals is None:
            proposals = self.generate_proposals(images)
        elif proposals.dim() != 4 or proposals.shape[0] != images.shape[0]:
            raise ValueError(f"proposals: expected [B={images.shape[0]}, Q, h, w], got {tuple(proposals.shape)}")
        proposals = proposals.to(images.device)
        mask_logits = self.distribution_adapter(proposals) if self.distribution_adapter is not None else proposals
        enc = encode_with_mask_tokens(self.clip.visual, self.clip_pixels(images), mask_logits, self.patch_mask,
                                      self.seve_modules(), vocabulary,
                                      checkpoint_blocks=self.gradient_checkpointing and self.training)
        class_logits = self.classify(enc["region_embeddings"], vocabulary)
        if valid is not None:  # padded oracle proposals are "no object"
            pad = no_object_logits(class_logits.shape[1], vocabulary.shape[0], class_logits.shape[0], class_logits.device)
            class_logits = torch.where(valid.unsqueeze(-1), class_logits, pad.to(class_logits.dtype))
        if self.spec.classes == "oracle":
            class_logits = oracle_class_logits(mask_logits, targets, vocabulary.shape[0]).to(class_logits.dtype)
        return {"mask_logits": mask_logits, "class_logits": class_logits,
                "region_embeddings": enc["region_embeddings"], "proposals": proposals}

    def seve_modules(self) -> dict[int, nn.Module]:
        """{block index: the SEVE module that runs in it} (a shared module appears under every block)."""
        if "shared" in self.seve:
            return dict.fromkeys(self.seve_blocks, self.seve["shared"])
        return {int(k): m for k, m in self.seve.items()}

    def loss(self, outputs: dict, targets: list[dict], weights: dict, no_object_weight: float, criterion: dict,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Eq. 6 (see loss.py): {loss_ce, loss_dice, loss_bce, loss}. The config's values, no defaults:
        weights `train.loss_weights` {ce, dice, bce}; no_object_weight `train.no_object_weight` (CE weight of
        the no-object class); criterion `train.criterion` ({type: point|dense, ...}); generator: the point
        criterion's random source (default torch's RNG)."""
        return set_criterion(outputs, targets, weights, no_object_weight=no_object_weight, criterion=criterion,
                             generator=generator)

    # ----------------------------------------------------------------- notebook API
    @torch.no_grad()
    def classify_proposals(self, images: torch.Tensor, class_names: list[list[str]],
                           proposals: torch.Tensor | None = None) -> dict:
        """Convenience for notebooks: classify proposals (given or generated) against class names.
        Returns forward()'s dict plus "probabilities" [B, Q, C+1] and "labels" [B, Q] (C = no object)."""
        vocab = self.encode_vocabulary(class_names)
        out = self.forward(images, vocab, proposals=proposals)
        out["probabilities"] = out["class_logits"].softmax(-1)
        out["labels"] = out["probabilities"].argmax(-1)
        return out
