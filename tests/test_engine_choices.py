"""Every training/evaluation choice is a config key that changes behaviour (docs/choices.md):
lr schedules against hand-computed factors, gradient clipping, weight decay per kind, the lr
multiplier's groups, thresholds reaching the panoptic merge, templates/synonyms/void, the
resolved config listing every choice, and the fidelity_sensitivity target's plan."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from fisa.config import experiment_seeds, load_config, resolve_experiment
from fisa.engine.inference import predict
from fisa.engine.loop import LoopConfig, clip_gradients, lr_lambda, train_loop
from fisa.engine.train import make_optimizer
from fisa.models import build_model
from fisa.models.parameters import param_groups, trainable_parameters
from fisa.models.text import apply_synonym_mode

from test_engine_standin import Points
from test_models_mask_attention import model_cfg
from test_workflow import job_counts, snakemake, workflow_copy

SCHEDULE = {"type": "constant", "warmup_iterations": 0, "warmup_factor": 1.0, "poly_power": 0.9,
            "steps": [], "gamma": 0.1}


def _lrs(schedule: dict, iterations: int, base: float = 0.5) -> list[float]:
    """The lr a real AdamW + LambdaLR uses at each iteration."""
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=base)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(schedule, iterations))
    out = []
    for _ in range(iterations):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant_schedule_with_detectron2_linear_warmup():
    # warm-up factor 0.2 over 4 iterations: f(a) = 0.2 (1 - a) + a, a = step / 4; then 1
    lrs = _lrs({**SCHEDULE, "warmup_iterations": 4, "warmup_factor": 0.2}, 6)
    assert lrs == pytest.approx([0.5 * 0.2, 0.5 * 0.4, 0.5 * 0.6, 0.5 * 0.8, 0.5, 0.5])
    # factor 1.0 (Mask2Former's and MaskCLIP's configs) makes the warm-up a no-op
    assert _lrs({**SCHEDULE, "warmup_iterations": 10}, 5) == pytest.approx([0.5] * 5)


def test_poly_schedule_matches_hand_computation():
    lrs = _lrs({**SCHEDULE, "type": "poly", "poly_power": 0.9}, 10)
    assert lrs == pytest.approx([0.5 * (1 - t / 10) ** 0.9 for t in range(10)])
    assert lrs[5] == pytest.approx(0.5 * 0.5 ** 0.9)


def test_multistep_schedule_milestones_are_fractions_of_the_run():
    # 8 iterations, steps at 0.5 and 0.75 -> milestones 4 and 6
    lrs = _lrs({**SCHEDULE, "type": "multistep", "steps": [0.5, 0.75], "gamma": 0.1}, 8)
    assert lrs == pytest.approx([0.5] * 4 + [0.05] * 2 + [0.005] * 2)


@pytest.mark.parametrize("bad", [{"type": "cosine"}, {"type": "multistep", "steps": [0.8, 0.4]},
                                 {"type": "multistep", "steps": [1.5]}])
def test_bad_schedule_is_named(bad):
    with pytest.raises(ValueError, match="train.lr_schedule"):
        lr_lambda({**SCHEDULE, **bad}, 10)


def _grads(*values):
    params = []
    for v in values:
        p = nn.Parameter(torch.zeros(len(v)))
        p.grad = torch.tensor(v, dtype=torch.float32)
        params.append(p)
    return params


def test_clip_gradients_each_type():
    # full_model: one norm over everything (|(3, 4, 0, 12)| = 13) scaled to 1.3
    ps = _grads([3.0, 4.0], [0.0, 12.0])
    assert clip_gradients(ps, {"type": "full_model", "value": 1.3}) == pytest.approx(13.0)
    assert torch.allclose(torch.cat([p.grad for p in ps]), torch.tensor([0.3, 0.4, 0.0, 1.2]), atol=1e-5)
    # norm: each parameter's own norm (5 and 12) scaled to 1
    ps = _grads([3.0, 4.0], [0.0, 12.0])
    clip_gradients(ps, {"type": "norm", "value": 1.0})
    assert torch.allclose(ps[0].grad, torch.tensor([0.6, 0.8]), atol=1e-5)
    assert torch.allclose(ps[1].grad, torch.tensor([0.0, 1.0]), atol=1e-5)
    # value: elementwise
    ps = _grads([3.0, -4.0], [0.5, 12.0])
    clip_gradients(ps, {"type": "value", "value": 1.0})
    assert torch.equal(torch.cat([p.grad for p in ps]), torch.tensor([1.0, -1.0, 0.5, 1.0]))
    # none: unchanged, norm still reported
    ps = _grads([3.0, 4.0])
    assert clip_gradients(ps, {"type": "none", "value": 1.0}) == pytest.approx(5.0)
    assert torch.equal(ps[0].grad, torch.tensor([3.0, 4.0]))


def test_loop_clips_and_logs_lr_and_grad_norm(tmp_path):
    """With SGD (lr 1) the step is minus the clipped gradient: its norm is the clip value."""
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda({**SCHEDULE, "type": "poly"}, 2))

    def step_fn(m, batch):
        loss = 100.0 * nn.functional.cross_entropy(m(batch["x"]), batch["y"])
        return {"loss": loss, "loss_ce": loss.detach()}

    collate = lambda items: {k: torch.stack([d[k] for d in items]) for k in items[0]}
    cfg = LoopConfig(iterations=1, global_batch=4, micro_batch=4, checkpoint_every=10, log_every=1,
                     progress_bar=False, grad_clip={"type": "full_model", "value": 0.01})
    train_loop(model, Points(), step_fn, opt, sched, cfg, tmp_path, collate_fn=collate)
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert float(moved.norm()) == pytest.approx(0.01, rel=1e-3)
    rows = list(csv.DictReader(open(tmp_path / "losses.csv")))
    assert list(rows[0])[:3] == ["iteration", "lr", "grad_norm"] and "loss_ce" in rows[0]
    assert float(rows[0]["lr"]) == 1.0 and float(rows[0]["grad_norm"]) > 0.01  # logged before clipping


def _groups(model, **kw):
    args = {"lr": 1e-4, "weight_decay": 0.05, "backbone_lr_multiplier": 0.1}
    return {g["name"]: g for g in param_groups(model, **{**args, **kw})}


def test_weight_decay_by_kind_and_multiplier_groups():
    model = build_model(model_cfg(), "seve_full_finetune")  # LayerNorms, biases and weights all train
    g = _groups(model, weight_decay_bias=0.0, weight_decay_norm=0.01)
    assert g["clip_visual/norm"]["weight_decay"] == 0.01
    assert g["clip_visual/bias"]["weight_decay"] == 0.0 and g["clip_visual/weight"]["weight_decay"] == 0.05
    assert g["clip_visual/weight"]["lr"] == pytest.approx(1e-5) and g["seve/weight"]["lr"] == pytest.approx(1e-4)
    norm_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.LayerNorm) and m.weight.requires_grad}
    assert norm_ids and norm_ids <= {id(p) for p in g["clip_visual/norm"]["params"]} | \
        {id(p) for k, v in g.items() if k.endswith("/norm") for p in v["params"]}
    # every trainable tensor exactly once
    ids = [id(p) for v in g.values() for p in v["params"]]
    assert len(ids) == len(set(ids)) and sum(p.numel() for v in g.values() for p in v["params"]) == \
        trainable_parameters(model)
    # the references' default: biases decay like weights
    assert _groups(model)["clip_visual/bias"]["weight_decay"] == 0.05
    # the multiplier on the generator only (MaskCLIP/Mask2Former's "backbone"): q projections at full lr
    fisa = build_model(model_cfg(), "fisa")
    assert _groups(fisa, multiplier_groups=["mask_generator"])["query_projection/weight"]["lr"] == pytest.approx(1e-4)
    assert _groups(fisa)["query_projection/weight"]["lr"] == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="backbone_lr_multiplier_applies_to"):
        _groups(fisa, multiplier_groups=["backbone"])


def test_no_weight_decay_on_biases_when_configured():
    """AdamW with a zero gradient: decay alone moves a weight, not a bias configured without it."""
    model = build_model(model_cfg(), "fisa")
    train = load_config()["presets"]["small"]["defaults"]["train"]
    opt = make_optimizer(model, {**train, "weight_decay_bias": 0.0, "lr": 0.1})
    biases = [p for g in opt.param_groups if g["name"].endswith("/bias") for p in g["params"]]
    weights = [p for g in opt.param_groups if g["name"].endswith("/weight") for p in g["params"]]
    assert biases and weights
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.fill_(1.0)
                p.grad = torch.zeros_like(p)
    opt.step()
    assert all(torch.equal(b, torch.ones_like(b)) for b in biases)
    for g in opt.param_groups:  # AdamW's decoupled decay alone: p <- p (1 - lr wd), lr of the group
        if g["name"].endswith("/weight"):
            assert g["weight_decay"] == train["weight_decay"]
            assert all(torch.allclose(w, torch.full_like(w, 1.0 - g["lr"] * g["weight_decay"])) for w in g["params"])


def test_make_optimizer_has_no_hidden_default():
    model = build_model(model_cfg(), "fisa")
    train = dict(load_config()["presets"]["small"]["defaults"]["train"])
    del train["weight_decay_norm"]
    with pytest.raises(KeyError, match="weight_decay_norm"):
        make_optimizer(model, train)


def _one_proposal(score_logit: float):
    # 2 classes + no object; proposal 0 covers the left half with class 0
    masks = torch.full((1, 4, 4), -10.0)
    masks[0, :, :2] = 10.0
    logits = torch.tensor([[score_logit, 0.0, -10.0]])
    return {"mask_logits": masks, "class_logits": logits}


def test_thresholds_reach_the_panoptic_merge():
    out = _one_proposal(0.5)  # p(class 0) = e^.5 / (e^.5 + 1 + e^-10) = 0.622
    score = math.exp(0.5) / (math.exp(0.5) + 1 + math.exp(-10))
    kept = predict(out, {"panoptic"}, [True, False], {"object_mask_threshold": score - 0.01, "overlap_threshold": 0.8})
    dropped = predict(out, {"panoptic"}, [True, False], {"object_mask_threshold": score + 0.01, "overlap_threshold": 0.8})
    assert len(kept["panoptic"][1]) == 1 and int((kept["panoptic"][0] > 0).sum()) == 8
    assert dropped["panoptic"][1] == []
    with pytest.raises(KeyError, match="overlap_threshold"):
        predict(out, {"panoptic"}, [True, False], {"object_mask_threshold": 0.0})


def test_synonym_modes():
    names = [["road", "route"], ["sky"]]
    assert apply_synonym_mode(names, "average") == names
    assert apply_synonym_mode(names, "first") == [["road"], ["sky"]]
    assert apply_synonym_mode(names, "joined") == [["road, route"], ["sky"]]
    with pytest.raises(ValueError, match="model.synonyms"):
        apply_synonym_mode(names, "all")


def test_templates_and_synonyms_change_the_vocabulary():
    plain = build_model(model_cfg(prompt_templates="name_only", synonyms="joined"), "baseline")
    names = [["road", "route"], ["sky"]]
    v = plain.encode_vocabulary(names)
    # name_only + joined: the text embedding of the bare, unsplit name (MaskCLIP)
    tokens = plain.tokenizer(["road, route", "sky"])
    ref = nn.functional.normalize(plain.clip.encode_text(tokens).float(), dim=-1)
    assert torch.allclose(v, ref, atol=1e-5)
    fcclip = build_model(model_cfg(prompt_templates="fcclip", synonyms="joined"), "baseline")
    assert not torch.allclose(fcclip.encode_vocabulary(names), v, atol=1e-3)


def test_void_other_text_in_training_none_in_evaluation():
    model = build_model(model_cfg(void="other_text"), "fisa")
    assert not model.no_object_embedding.requires_grad
    regions = torch.randn(1, 3, model.no_object_embedding.numel())
    vocab = model.encode_vocabulary([["sky"], ["tree"]])
    other = model.encode_vocabulary([["other"]])[0]
    model.train()
    train_void = model.classify(regions, vocab)[..., -1]
    expected = model.logit_scale * nn.functional.normalize(regions, dim=-1) @ other
    assert torch.allclose(train_void, expected, atol=1e-5)
    model.eval()
    assert torch.isinf(model.classify(regions, vocab)[..., -1]).all()
    learned = build_model(model_cfg(void="learned"), "fisa")
    assert learned.no_object_embedding.requires_grad
    with pytest.raises(ValueError, match="model.void"):
        build_model(model_cfg(void="nothing"), "fisa")


@pytest.mark.parametrize("preset", ["paper", "small"])
def test_resolved_config_lists_every_choice(preset):
    r = resolve_experiment(load_config(), "fisa", preset)
    for key in ("prompt_templates", "synonyms", "void"):
        assert key in r["model"], key
    for key in ("backbone_lr_multiplier", "backbone_lr_multiplier_applies_to", "lr_schedule", "grad_clip",
                "weight_decay", "weight_decay_bias", "weight_decay_norm", "weight_decay_embedding",
                "no_object_weight"):
        assert key in r["train"], key
    assert set(r["train"]["lr_schedule"]) == set(SCHEDULE)
    assert {"object_mask_threshold", "overlap_threshold"} <= set(r["eval"])


def test_fidelity_sensitivity_plans_without_retraining_thresholds(tmp_path):
    copy = workflow_copy(tmp_path / "wf")
    res = snakemake(copy, "-n", "--cores", "1", "fidelity_sensitivity", "--config", "preset=small")
    assert res.returncode == 0, res.stdout[-3000:]
    jobs = job_counts(res.stdout)
    cfg = load_config(copy / "config.yaml")
    sens = [e for e in cfg["experiments"] if e.startswith("sens_")]
    eval_only = [e for e in sens if "weights_from" in cfg["experiments"][e]]
    fisa_seeds = len(experiment_seeds(cfg, "fisa", "small"))  # the default, with its seed spread
    assert eval_only and jobs["evaluate"] == len(sens) + fisa_seeds
    assert jobs["train"] == len(sens) + fisa_seeds - len(eval_only)
    assert jobs["table_fidelity_sensitivity"] == 1 and jobs["fig_fidelity_sensitivity"] == 1
    for e in eval_only:
        assert f"results/small/runs/{e}/" not in res.stdout  # its run config, not a run folder
    # paper preset: not in all_tables unless asked for
    res = snakemake(copy, "-n", "--cores", "1", "all_tables")
    assert res.returncode == 0, res.stdout[-3000:]
    assert "/sens_" not in res.stdout and "table_fidelity_sensitivity" not in job_counts(res.stdout)
