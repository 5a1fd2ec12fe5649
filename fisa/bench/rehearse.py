"""`python -m fisa.bench.rehearse`: every model of a preset at its real shapes, before a GPU is booked.

    python -m fisa.bench.rehearse --preset paper --mode shapes --output F.csv

`--mode shapes` builds each experiment's model (backbone x generator x variant) through the one
factory, `fisa.models.build_model`, with `model.weights: random` on the `meta` device: real
architectures at paper size, no weights, no memory, no compute. On it, it runs

- one full training step (forward, Eq. 6 loss, backward, AdamW step from `make_optimizer`) at
  `train.crop_size` with the batch per GPU (`train.batch_size / resources.train.gpus`), on the
  training set's vocabulary, for experiments that train;
- one test image (`run_model`, the evaluation's own call) at `eval.max_size x eval.min_size`
  for each of the experiment's datasets, with that dataset's vocabulary (a referring image:
  `REFERRING_EXPRESSIONS` expressions).

Any shape, dtype or device error fails that row (`status` names the error); the others still run.
Per row: parameters (total, trainable, trainable by group), FLOPs per training step and per test
image (torch.utils.flop_counter; SDPA's CPU flash kernel gets a formula), the one-off FLOPs of
encoding each dataset's vocabulary (prompts x one prompt through the text tower), and an
activation-memory estimate (bytes autograd saves for backward in the training step, fp32; `attention_matrix_bytes` of them are [L, L] attention maps that only
SDPA's math path keeps, see `SavedBytes`). Identical configurations are rehearsed once and shared between rows.

What shapes cannot show, and is replaced here: the Hungarian assignment is data (scipy on real
costs), so proposal i is paired with segment i; Mask2Former's overflow clamp while its generator
trains (adapt_mask_generator) reads values, so it is told they are finite; `nonzero` (the oracle
classifier's selections) counts every element as nonzero (an upper bound); post-processing (panoptic merging, argmax
decisions) is data-dependent and is not run; a frozen generator runs once per resolution (its
proposals' shape and FLOPs are reused: they do not depend on the vocabulary or the variant); autocast does not act on the meta device, so the
step runs in fp32 (FLOPs do not depend on it; the activation estimate is fp32's).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import sys
import time
from pathlib import Path
from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_backward_flop_count, \
    sdpa_flop_count

log = logging.getLogger("fisa.rehearse")

COLUMNS = ("experiment", "backbone", "generator", "variant", "params_total", "params_trainable",
           "train_step_flops", "test_image_flops", "status", "clip_model", "generator_id", "batch_per_gpu",
           "crop_size", "train_classes", "test_flops_by_dataset", "vocabulary_flops", "activation_bytes", "attention_matrix_bytes",
           "trainable_by_group", "precision", "seconds")
REFERRING_EXPRESSIONS = 8   # a referring test image's vocabulary (its expressions), our choice
SEGMENTS_PER_IMAGE = 12     # ground-truth segments per training image, our choice (COCO: ~11 on average)
LOGIT_SCALE = 100.0         # CLIP's learned scale (OpenAI's weights); on meta it cannot be read from the model
DEVICE = torch.device("meta")

_aten = torch.ops.aten
_registered = False


def register_cpu_sdpa_flops() -> None:
    """FlopCounterMode counts SDPA's CUDA kernels but not `_scaled_dot_product_flash_attention_for_cpu`
    (what CPU and meta tensors dispatch to), which would drop every attention's FLOPs."""
    global _registered
    if _registered:
        return

    @register_flop_formula(_aten._scaled_dot_product_flash_attention_for_cpu)
    def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(_aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _cpu_sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                           **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    _registered = True


def shape_only_match(class_logits, mask_logits, labels, target_masks, weights=None, point_coords=None):
    """The assignment without values: proposal i <-> segment i (int64 [min(Q, N)] each)."""
    n = min(class_logits.shape[0], labels.shape[0])
    idx = torch.arange(n, dtype=torch.int64, device="cpu")
    return idx, idx.clone()


class _TorchWithoutOverflowCheck:
    """`torch` for transformers' Mask2Former module, but `isfinite` answers True: its pixel decoder
    clamps overflowing activations while training (`if not torch.isfinite(h).all()`), a check on
    values the meta device does not have. Everything else is torch itself."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def isfinite(t):
        return torch.ones((), dtype=torch.bool)


class SavedBytes:
    """Bytes autograd saves for backward (activations), parameters excluded: a context manager.

    `attention_bytes`: the part in square [.., L, L] tensors with L >= ATTENTION_MIN_TOKENS, i.e.
    self-attention score/probability matrices. On meta (and CPU) SDPA's backward takes the math
    path, which saves them; CUDA's flash / memory-efficient kernels do not (they keep O(L) per head),
    so a GPU estimate leaves them out."""

    ATTENTION_MIN_TOKENS = 1024

    def __init__(self, params):
        self.param_ids = {id(p) for p in params}
        self.seen: set[int] = set()
        self.bytes = 0
        self.attention_bytes = 0

    def _pack(self, t):
        base = t._base if t._base is not None else t
        if id(t) not in self.seen and id(base) not in self.param_ids and id(t) not in self.param_ids:
            self.seen.add(id(t))
            n = t.numel() * t.element_size()
            self.bytes += n
            if t.dim() >= 2 and t.shape[-1] == t.shape[-2] >= self.ATTENTION_MIN_TOKENS:
                self.attention_bytes += n
        return t

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


def shape_model_config(resolved: dict) -> dict:
    """The experiment's model section as the rehearsal builds it: same architectures, random weights."""
    return {**resolved["model"], "weights": "random", "logit_scale": LOGIT_SCALE}


def synthetic_targets(batch: int, classes: int, size: int, generator: torch.Generator) -> list[dict]:
    """Real (CPU) ground truth: labels int64 [N], masks bool [N, size, size] (rectangles)."""
    targets = []
    for _ in range(batch):
        masks = torch.zeros(SEGMENTS_PER_IMAGE, size, size, dtype=torch.bool)
        for k in range(SEGMENTS_PER_IMAGE):
            y, x = torch.randint(0, size // 2, (2,), generator=generator).tolist()
            masks[k, y:y + size // 3, x:x + size // 3] = True
        targets.append({"labels": torch.randint(0, classes, (SEGMENTS_PER_IMAGE,), generator=generator),
                        "masks": masks})
    return targets


def counted(fn):
    """(result, FLOPs) of fn() under FlopCounterMode (`nonzero` on meta: every element counts as
    nonzero, torch's own upper-bound switch)."""
    from torch.fx.experimental import _config as fx_config

    counter = FlopCounterMode(display=False)
    with counter, fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        out = fn()
    return out, counter.get_total_flops()


def vocabulary_names(dataset: str) -> list[list[str]]:
    """A dataset's class names (synonym lists); a referring image's expressions."""
    from fisa.data.registry import get_meta

    meta = get_meta(dataset)
    if "referring" in meta.tasks:
        return [[f"the object number {i} on the left"] for i in range(REFERRING_EXPRESSIONS)]
    return meta.classes


def shaped_vocabulary(model, names: list[list[str]]) -> tuple[torch.Tensor, int]:
    """(vocabulary [C, D] on the meta device, FLOPs of encoding it): what `encode_vocabulary`
    returns, without tokenising thousands of prompts. The FLOPs are those of one prompt through
    the text tower (a [1, context_length] token row; every prompt is padded to it) x prompts."""
    prompts = sum(len(syns) for syns in names) * len(model.templates)
    tokens = torch.zeros(1, model.clip.context_length, dtype=torch.int64, device=DEVICE)
    with torch.no_grad():
        emb, flops = counted(lambda: model.clip.encode_text(tokens))
    return torch.empty(len(names), emb.shape[-1], device=DEVICE), flops * prompts


def rehearse_training(model, resolved: dict, batch: int) -> dict:
    """One training step at shapes: forward + loss + backward + optimizer step. A variant that
    adapts the text encoder encodes the vocabulary with gradients inside the step (the engine's
    `TrainingForward`); a frozen text encoder's vocabulary is encoded once (not counted per step)."""
    from fisa.engine.train import TrainingForward, make_optimizer

    t = resolved["train"]
    crop = int(t["crop_size"])
    names = vocabulary_names(t["dataset"])
    g = torch.Generator().manual_seed(0)
    model.train()
    if model.text_trainable:
        step = TrainingForward(model, names, t["loss_weights"], float(t["no_object_weight"]), t["criterion"])
    else:
        vocabulary, _ = shaped_vocabulary(model, names)

        def step(batch_):  # TrainingForward's body with the once-encoded vocabulary
            images_, targets_ = batch_["images"], batch_["targets"]
            return model.loss(model(images_, vocabulary), targets_, t["loss_weights"], float(t["no_object_weight"]),
                              t["criterion"])
    optimizer = make_optimizer(model, t)
    images = torch.empty(batch, 3, crop, crop, device=DEVICE)
    targets = synthetic_targets(batch, len(names), crop, g)
    saved = SavedBytes(model.parameters())

    def one_step():
        optimizer.zero_grad(set_to_none=True)
        with saved:
            loss = step({"images": images, "targets": targets})["loss"]
        loss.backward()
        optimizer.step()
        return loss

    with mock.patch("fisa.models.loss.hungarian_match", shape_only_match), \
            mock.patch("transformers.models.mask2former.modeling_mask2former.torch", _TorchWithoutOverflowCheck()):
        loss, flops = counted(one_step)
    if loss.shape != ():
        raise RuntimeError(f"training loss has shape {tuple(loss.shape)}, expected a scalar")
    model.eval()
    return {"train_step_flops": flops, "activation_bytes": saved.bytes,
            "attention_matrix_bytes": saved.attention_bytes,
            "train_classes": len(names), "crop_size": crop, "batch_per_gpu": batch}


def rehearse_test_image(model, resolved: dict, dataset: str, proposals_cache: dict) -> dict:
    """One test image at the evaluation's resolution (max_size x min_size) through `run_model`.

    The frozen generator's output does not depend on the vocabulary, so after a generator's first
    test image (run in full by `run_model`, its FLOPs read off the generator module) the same
    generator at the same resolution is not run again: its proposals (shape) and FLOPs are reused
    and only the model past it runs (`FisaModel.forward(..., proposals=)`)."""
    from fisa.engine.inference import run_model

    e = resolved["eval"]
    h, w = int(e["min_size"]), int(e["max_size"])
    names = vocabulary_names(dataset)
    model.eval()
    vocab, vocab_flops = shaped_vocabulary(model, names)
    uses_generator = model.variant != "oracle_generator"
    gkey = _key(resolved["model"]["generator_config"], h, w)
    with torch.no_grad():
        image = torch.empty(3, h, w, dtype=torch.uint8, device=DEVICE)
        targets = None
        if resolved["variant"].startswith("oracle"):
            targets = [{"labels": torch.arange(SEGMENTS_PER_IMAGE) % len(names),
                        "masks": torch.empty(SEGMENTS_PER_IMAGE, h, w, dtype=torch.bool, device=DEVICE)}]
        if uses_generator and gkey in proposals_cache:
            proposals, generator_flops = proposals_cache[gkey]
            x = image.float()[None]  # run_model's input at this size (already max_size x min_size)
            out, flops = counted(lambda: model(x, vocab, proposals=proposals, **({"targets": targets} if targets else {})))
            flops += generator_flops
            mask_logits, class_logits = out["mask_logits"][0], out["class_logits"][0]
        else:
            from torch.fx.experimental import _config as fx_config

            counter = FlopCounterMode(display=False)
            with counter, fx_config.patch(meta_nonzero_assume_all_nonzero=True):
                out = run_model(model, image, vocab, h, w, targets=targets)
            flops = counter.get_total_flops()
            mask_logits, class_logits = out["mask_logits"], out["class_logits"]
            if uses_generator:
                generator_flops = sum(counter.get_flop_counts().get(f"{type(model).__name__}.generator", {}).values())
                q = model.num_proposals
                proposals_cache[gkey] = (torch.empty(1, q, -(-h // 4), -(-w // 4), device=DEVICE), generator_flops)
    q = mask_logits.shape[0]
    if tuple(class_logits.shape) != (q, len(names) + 1) or mask_logits.dim() != 3:
        raise RuntimeError(f"{dataset}: outputs mask_logits {tuple(mask_logits.shape)}, class_logits "
                           f"{tuple(class_logits.shape)}; expected [Q, h, w] and [Q, {len(names) + 1}]")
    return {"flops": flops, "vocabulary_flops": vocab_flops, "classes": len(names)}


def batch_per_gpu(config: dict, preset: str, resolved: dict) -> int:
    """train.batch_size / resources.train.gpus (at least 1): what one GPU holds per step."""
    resources = config["presets"][preset]["resources"]
    gpus = max(int((resources.get("train") or resources["default"])["gpus"]), 1)
    return max(int(resolved["train"]["batch_size"]) // gpus, 1)


def _key(*parts) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def rehearse_shapes(config: dict, preset: str, experiments: list[str] | None = None) -> list[dict]:
    """One row per experiment (see COLUMNS); a failing experiment gets status 'error: ...'."""
    from fisa.config import resolve_experiment
    from fisa.models import build_model
    from fisa.models.parameters import total_parameters, trainable_by_group, trainable_parameters

    register_cpu_sdpa_flops()
    names = experiments or [n for n, e in config["experiments"].items() if not e.get("optional", False)]
    built: dict[str, tuple] = {}       # model key -> (model or exception)
    train_done: dict[str, dict] = {}
    test_done: dict[str, dict] = {}
    proposals_cache: dict[str, tuple] = {}  # generator x resolution -> (proposals, FLOPs)
    rows = []
    for name in names:
        t0 = time.perf_counter()
        resolved = resolve_experiment(config, name, preset)
        m = resolved["model"]
        row = {"experiment": name, "backbone": m["backbone"], "generator": m["generator"],
               "variant": resolved["variant"], "clip_model": m["clip"]["model"],
               "generator_id": m["generator_config"].get("id") or m["generator_config"].get("config", ""),
               "precision": f"{resolved['train'].get('precision', 'fp32')} requested; rehearsed in fp32 (meta)"}
        try:
            model_cfg = shape_model_config(resolved)
            mkey = _key(model_cfg, resolved["variant"])
            if mkey not in built:
                if len(built):  # one model at a time
                    built.clear()
                torch.manual_seed(resolved["seed"])
                built[mkey] = build_model(model_cfg, resolved["variant"], device=DEVICE)
            model = built[mkey]
            row.update(params_total=total_parameters(model), params_trainable=trainable_parameters(model),
                       trainable_by_group=json.dumps({k: v for k, v in trainable_by_group(model).items() if v}))
            batch = batch_per_gpu(config, preset, resolved)
            if int(resolved["train"]["iterations"]) > 0:
                tkey = _key(mkey, batch, resolved["train"]["crop_size"], resolved["train"]["dataset"],
                            resolved["train"]["loss_weights"])
                if tkey not in train_done:
                    train_done[tkey] = rehearse_training(model, resolved, batch)
                tr = train_done[tkey]
                row.update(train_step_flops=tr["train_step_flops"], activation_bytes=tr["activation_bytes"],
                           attention_matrix_bytes=tr["attention_matrix_bytes"],
                           batch_per_gpu=batch, crop_size=tr["crop_size"], train_classes=tr["train_classes"])
            else:
                row.update(train_step_flops=0, activation_bytes=0, attention_matrix_bytes=0, batch_per_gpu=0)
            by_dataset, vocab = {}, {}
            for ds in resolved["datasets"]:
                ekey = _key(mkey, ds, resolved["eval"]["min_size"], resolved["eval"]["max_size"])
                if ekey not in test_done:
                    test_done[ekey] = rehearse_test_image(model, resolved, ds, proposals_cache)
                by_dataset[ds] = test_done[ekey]["flops"]
                vocab[ds] = test_done[ekey]["vocabulary_flops"]
            row.update(test_image_flops=by_dataset[resolved["datasets"][0]] if by_dataset else 0,
                       test_flops_by_dataset=json.dumps(by_dataset), vocabulary_flops=json.dumps(vocab),
                       status="ok")
        except Exception as e:  # noqa: BLE001  (a row says what stopped it; the others run)
            log.exception("%s: rehearsal failed", name)
            row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        row["seconds"] = round(time.perf_counter() - t0, 2)
        log.info("%s: %s (%.1f s)", name, row["status"], row["seconds"])
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: str | Path) -> None:
    """Write the rows (COLUMNS order) atomically."""
    from fisa.utils.io import atomic_write_text
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: r.get(c, "") for c in COLUMNS})
    atomic_write_text(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--mode", choices=["shapes"], default="shapes")
    ap.add_argument("--experiments", nargs="*", default=None, help="default: every non-optional experiment")
    ap.add_argument("--output", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from fisa.config import load_config, preset_name

    config = load_config(args.config)
    preset_name(config, args.preset)  # an unknown preset: ConfigError naming the presets
    t0 = time.perf_counter()
    rows = rehearse_shapes(config, args.preset, args.experiments)
    write_csv(rows, args.output)
    bad = [r for r in rows if r["status"] != "ok"]
    print(f"{len(rows)} experiments, {len(rows) - len(bad)} ok, {time.perf_counter() - t0:.0f} s -> {args.output}")
    for r in bad:
        print(f"  {r['experiment']}: {r['status']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # an unknown preset or a config error: one `error:` line
