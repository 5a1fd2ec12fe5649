"""Download a preset's pretrained weights into its cache_dir (the workflow's fetch rules).

    python -m fisa.engine.fetch --config config.yaml --preset paper --backbone vit_l14_336
    python -m fisa.engine.fetch --config config.yaml --preset paper --generator swin_b
    python -m fisa.engine.fetch --config config.yaml --preset paper --generator r50   # download + convert

Backbones: open_clip weights of `pretrained` into <cache_dir>/open_clip (nothing to do for
`pretrained: null`); `source: harness` backbones are pre-trained by the harness
(`fisa.engine.pretrain_clip`) into <cache_dir>/clip/<name>.pt. Generators: `hub` ids into <cache_dir>/huggingface; `converted` downloads the
detectron2 .pkl into <cache_dir>/downloads (fisa.utils.http: resumed, retried, sha256-checked) and converts it to <cache_dir>/generators/<name>/;
`harness` generators are made by `train_generator` (nothing to fetch). Ends by writing
<cache_dir>/.done/<backbone|generator>_<name>.json atomically.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from fisa.config import load_config
from fisa.engine.cli import preset_entry
from fisa.utils.io import atomic_write_json

log = logging.getLogger("fisa.engine.fetch")


def done_path(cache_dir: str | Path, kind: str, name: str) -> Path:
    """<cache_dir>/.done/<kind>_<name>.json (kind: backbone | generator)."""
    return Path(cache_dir) / ".done" / f"{kind}_{name}.json"


def fetch_backbone(entry: dict, cache_dir: str | Path, name: str | None = None) -> dict:
    """Download the open_clip weights of a backbone entry {model, pretrained, image_size}; for a
    `source: harness` entry, run the harness pre-training (fisa.engine.pretrain_clip) instead."""
    import open_clip

    from fisa.models.clip_backbone import harness_clip_path, register_model_configs

    register_model_configs()
    if entry.get("source") == "harness":
        from fisa.engine.pretrain_clip import pretrain_clip

        if not name:
            raise ValueError("a harness backbone needs its logical name (its weights: <cache_dir>/clip/<name>.pt)")
        path = harness_clip_path(cache_dir, name)
        record = pretrain_clip(entry, path)
        return {"action": "pretrained", "path": str(path), "pretraining": record}
    if not entry.get("pretrained"):
        return {"action": "none", "reason": "pretrained is null: random weights, nothing to download"}
    cfg = open_clip.get_pretrained_cfg(entry["model"], entry["pretrained"])
    if not cfg:
        raise ValueError(f"backbone {entry['model']!r}: open_clip has no pretrained tag {entry['pretrained']!r} "
                         f"(known: {open_clip.list_pretrained_tags_by_model(entry['model'])})")
    path = open_clip.download_pretrained(cfg, cache_dir=str(Path(cache_dir) / "open_clip"))
    return {"action": "downloaded", "path": str(path)}


# detectron2's model zoo names a checkpoint model_final_<first 6 hex digits of its sha256>.pkl
D2_NAME_SHA256 = re.compile(r"_([0-9a-f]{6})\.pkl$")


def expected_sha256(url: str, sha256: str | None = None) -> str | None:
    """The checksum a download must match: the entry's `sha256`, else the sha256 prefix that
    detectron2's model-zoo file name carries (model_final_94dc52.pkl -> "94dc52"), else None."""
    if sha256:
        return sha256.lower()
    m = D2_NAME_SHA256.search(Path(url).name)
    return m.group(1) if m else None


def download_checkpoint(url: str, dest: Path, sha256: str | None = None, **fetch_kw) -> Path:
    """Download `url` to `dest` with the resuming, retrying fetch of fisa.utils.http and check its
    sha256 (full, or the detectron2 name prefix) before it gets its final name; a file already at
    `dest` is checked the same way."""
    from fisa.utils.http import checksum_mismatch, fetch
    from fisa.utils.io import sha256_of

    want = expected_sha256(url, sha256)

    def check(path: Path) -> None:
        if want is None:
            log.warning("%s: no checksum known (add `sha256:` to the generator entry)", url)
            return
        got = sha256_of(path)
        if not got.startswith(want):
            raise checksum_mismatch(url, "sha256", want, got, path)

    if dest.exists():
        check(dest)
        return dest
    log.info("downloading %s -> %s", url, dest)
    return fetch([url], dest, check, **fetch_kw)  # resume / retries / backoff / timeout; a wrong body is deleted


def fetch_generator(name: str, entry: dict, cache_dir: str | Path) -> dict:
    """Download (and for `converted`, convert) a generator entry."""
    source = entry.get("source")
    if source == "hub":
        from transformers import Mask2FormerForUniversalSegmentation

        Mask2FormerForUniversalSegmentation.from_pretrained(entry["id"], cache_dir=str(Path(cache_dir) / "huggingface"))
        return {"action": "downloaded", "id": entry["id"]}
    if source == "harness":
        return {"action": "none", "reason": "harness generators are trained by the `train_generator` rule"}
    if source == "converted":
        from fisa.models.convert_d2_mask2former import convert_file

        url = entry.get("url")
        if not url:
            raise ValueError(f"generators.{name}: a converted generator needs a `url` to the detectron2 .pkl")
        pkl = download_checkpoint(url, Path(cache_dir) / "downloads" / Path(url).name, entry.get("sha256"))
        out = Path(cache_dir) / "generators" / name
        convert_file(pkl, out)
        return {"action": "converted", "pkl": str(pkl), "path": str(out)}
    raise ValueError(f"generators.{name}.source: expected hub, harness or converted, got {source!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None)
    ap.add_argument("--preset", required=True)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--backbone", help="logical backbone name of the preset (e.g. vit_l14_336)")
    what.add_argument("--generator", help="logical generator name of the preset (e.g. swin_b)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    kind, name = ("backbone", args.backbone) if args.backbone else ("generator", args.generator)
    found = preset_entry(load_config(args.config), args.preset, kind, name)
    if found is None:
        return 2
    preset, entry = found
    cache_dir = preset["cache_dir"]
    try:
        if preset["defaults"]["model"]["weights"] == "random":
            # model.weights: random (the rehearsal preset): the architectures are built, nothing is loaded
            result = {"action": "none", "reason": "model.weights: random: nothing to download"}
        else:
            result = fetch_backbone(entry, cache_dir, name) if kind == "backbone" \
                else fetch_generator(name, entry, cache_dir)
    except (ValueError, OSError, RuntimeError) as e:  # RuntimeError: fisa.utils.http.DownloadError
        print(f"error: {kind} {name!r}: {e}", file=sys.stderr)
        return 1
    atomic_write_json(done_path(cache_dir, kind, name), {"kind": kind, "name": name, "preset": args.preset,
                                                          "entry": entry, **result})
    log.info("%s %s: %s", kind, name, result["action"])
    return 0


if __name__ == "__main__":
    from fisa.utils.errors import run_cli

    run_cli(main)  # one `error: <file>: <what> — <fix>` line for a user-fixable error
