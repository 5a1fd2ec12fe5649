"""Downloaded pickles cannot run code, user-fixable errors end in one line naming the file,
done-markers vouch for what they list, results honour the umask (fisa/utils)."""
import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fisa.utils import safe_pickle
from fisa.utils.errors import FisaError, describe, run_cli
from fisa.utils.io import atomic_torch_save, atomic_write_json, atomic_write_text
from fisa.utils.markers import MarkerError, check_data_marker, check_run_done, data_fingerprint, run_done_record

REPO = Path(__file__).resolve().parent.parent


# ---- no code from the network ------------------------------------------------------------------
class _Evil:
    """Unpickling this runs `touch <marker>` through os.system (the classic pickle exploit)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_pickle(path: Path, marker: Path, protocol: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"model": _Evil(marker)}, protocol=protocol))
    # The exploit is real: plain pickle runs it (the reference the refusal is compared with).
    probe = marker.with_name("probe")
    pickle.loads(pickle.dumps(_Evil(probe), protocol=protocol))
    assert probe.exists()
    return path


def test_safe_pickle_reads_the_data_the_downloads_hold(tmp_path):
    d2 = {"model": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.int64(3)}, "__author__": "x"}
    refs = [{"ref_id": 1, "sentences": [{"sent": "the red cup"}], "bbox": [1.0, 2.0, 3.0, 4.0], "split": "val"}]
    index = {"folder": ["a", "b"], "filename": ["x.jpg", "y.jpg"], "objectPresence": np.zeros((3, 2), np.uint8)}
    for protocol in (0, 2, 4, 5):
        for obj in (d2, refs, index):
            path = tmp_path / f"p{protocol}.pkl"
            path.write_bytes(pickle.dumps(obj, protocol=protocol))
            got = safe_pickle.load(path, encoding="latin1")
            assert pickle.dumps(got) == pickle.dumps(obj)


def test_crafted_pickle_is_refused_by_every_downloaded_pickle_reader(tmp_path):
    from fisa.data.datasets import DatasetError, load_refs as dataset_load_refs
    from fisa.data.prepare import PrepareError
    from fisa.data.prepare import ade847
    from fisa.data.prepare.refcoco import load_refs
    from fisa.models.convert_d2_mask2former import load_d2_checkpoint

    marker = tmp_path / "executed"
    d2 = _evil_pickle(tmp_path / "model_final_94dc52.pkl", marker)
    with pytest.raises(safe_pickle.UnsafePickleError, match=rf"^{d2}: refused to unpickle global posix\.system"):
        load_d2_checkpoint(d2)
    refs = _evil_pickle(tmp_path / "refcoco/refcoco/refs(unc).p", marker)
    with pytest.raises(PrepareError, match=r"refs\(unc\)\.p: refused to unpickle global posix\.system"):
        load_refs(refs)
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p: refused to unpickle global posix\.system"):
        dataset_load_refs(refs)
    index = _evil_pickle(tmp_path / "ade" / "ADE20K_2021_17_01/index_ade20k.pkl", marker, protocol=4)
    with pytest.raises(PrepareError, match=r"index_ade20k\.pkl: refused to unpickle global posix\.system"):
        ade847.prepare(tmp_path)
    assert not marker.exists(), "a crafted pickle ran code"


def test_crafted_pickle_cli_error_is_one_line_and_runs_nothing(tmp_path):
    marker = tmp_path / "executed"
    pkl = _evil_pickle(tmp_path / "model_final_94dc52.pkl", marker)
    res = subprocess.run([sys.executable, "-m", "fisa.models.convert_d2_mask2former", "--pkl", str(pkl),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {pkl}: refused to unpickle global posix.system") and " — " in last
    assert not marker.exists() and not (tmp_path / "out").exists()


# ---- one-line errors ---------------------------------------------------------------------------
def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def _one_line(capsys, main, argv=()):
    with pytest.raises(SystemExit) as ex:
        run_cli(main, list(argv))
    assert ex.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


def test_truncated_checkpoints_images_and_json_are_named_in_one_line(tmp_path, capsys):
    from PIL import Image
    from safetensors.torch import load_file, save_file

    pt = tmp_path / "runs/fisa/seed0/model_final.pt"
    pt.parent.mkdir(parents=True)
    torch.save({"model": {"w": torch.randn(64, 64)}}, pt)
    _truncate(pt)
    clip = tmp_path / "cache/clip/vit_b16.pt"
    clip.parent.mkdir(parents=True)
    torch.save({"w": torch.randn(64, 64)}, clip)
    _truncate(clip)
    st = tmp_path / "cache/generators/swin_b/model.safetensors"
    st.parent.mkdir(parents=True)
    save_file({"w": torch.randn(64, 64)}, str(st))
    _truncate(st, 0.001)
    png = tmp_path / "data/ADEChallengeData2016/annotations/validation/ADE_val_00000001.png"
    png.parent.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(png)
    _truncate(png)
    js = tmp_path / "results/small/eval/fisa/seed0/ade150.json"
    js.parent.mkdir(parents=True)
    js.write_text(json.dumps({"metrics": {"PQ": 1.0}}))
    _truncate(js)

    def read_label_map(path):
        from fisa.data.datasets import read_label_map as read
        return read(path)

    def read_json(path):
        with open(path) as fh:
            return json.load(fh)

    cases = [(pt, lambda a: torch.load(a[0], weights_only=True), "runs"),
             (clip, lambda a: torch.load(a[0], map_location="cpu", weights_only=True), "checkpoint"),
             (st, lambda a: load_file(a[0]), "checkpoint"),
             (png, lambda a: read_label_map(a[0]), "dataset"),
             (js, lambda a: read_json(a[0]), "snakemake -f")]
    for path, main, fix in cases:
        line = _one_line(capsys, main, [str(path)])
        assert line.startswith(f"error: {path}: ") and " — " in line and fix in line.split(" — ", 1)[1], line


def test_harness_clip_loader_names_a_truncated_file(tmp_path, capsys):
    from fisa.models.clip_backbone import harness_clip_path, load_harness_weights

    path = harness_clip_path(tmp_path, "vit_b16")
    path.parent.mkdir(parents=True)
    torch.save({"w": torch.randn(32, 32)}, path)
    _truncate(path)
    line = _one_line(capsys, lambda a: load_harness_weights(torch.nn.Linear(32, 32), str(tmp_path), "vit_b16"))
    assert line.startswith(f"error: {path}: cannot read it (")


def test_bugs_keep_their_traceback_and_debug_shows_it(capsys):
    def bug(argv):
        return {}["missing"]

    with pytest.raises(KeyError):
        run_cli(bug, [])

    def fixable(argv):
        assert "--debug" not in argv
        raise FisaError("a/b.json", "missing", "rerun it")

    with pytest.raises(SystemExit):
        run_cli(fixable, ["--debug"])
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == "error: a/b.json: missing — rerun it"
    assert describe(RuntimeError("a bug")) is None


# ---- verified done-markers ---------------------------------------------------------------------
def _run(tmp_path) -> Path:
    run = tmp_path / "results/small/runs/fisa/seed0"
    run.mkdir(parents=True)
    torch.save({"model": {"w": torch.randn(8)}}, run / "model_final.pt")
    (run / "run_config.yaml").write_text("experiment: fisa\n")
    atomic_write_json(run / "done.json", run_done_record(run, {"experiment": "fisa"}))
    return run


def test_run_done_vouches_for_its_files(tmp_path):
    run = _run(tmp_path)
    assert [f["path"] for f in check_run_done(run)["files"]] == ["model_final.pt", "run_config.yaml"]
    good = (run / "model_final.pt").read_bytes()
    _truncate(run / "model_final.pt")
    with pytest.raises(MarkerError, match=rf"^{run}/model_final.pt: \d+ bytes, .*done.json recorded \d+ .* — "
                                          rf"re-create only it: `snakemake -f {run}/done.json`"):
        check_run_done(run)
    (run / "model_final.pt").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))   # same size, one bit flipped
    with pytest.raises(MarkerError, match="SHA-256 differs"):
        check_run_done(run)
    (run / "model_final.pt").unlink()
    with pytest.raises(MarkerError, match=r"model_final.pt: missing, but .*done.json vouches for it"):
        check_run_done(run)
    (run / "done.json").write_text("{")
    with pytest.raises(MarkerError, match=r"done.json: unreadable"):
        check_run_done(run)
    assert (run / "run_config.yaml").exists()   # nothing is deleted


def test_evaluation_refuses_a_run_whose_model_changed(tmp_path, monkeypatch):
    from fisa.engine import run_model as common

    run = _run(tmp_path)
    _truncate(run / "model_final.pt")
    monkeypatch.setattr(common, "build_run_model", lambda resolved, device="cpu": torch.nn.Linear(1, 1))
    with pytest.raises(MarkerError, match=rf"^{run}/model_final.pt: \d+ bytes"):
        common.load_run_model({"experiment": "fisa", "train": {"iterations": 10}}, run)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from fisa.data.synthetic import generate

    root = tmp_path_factory.mktemp("data")
    generate(root, seed=0)
    return root


def test_dataset_marker_catches_a_deleted_folder(synthetic_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    record = check_data_marker("ade150", root)
    assert record["fingerprint"] == data_fingerprint("ade150", root)
    folder = root / record["fingerprint"]["val.image_dir"]["path"] if "val.image_dir" in record["fingerprint"] \
        else root / next(e["path"] for e in record["fingerprint"].values() if "entries" in e)
    one = next(folder.iterdir())
    one.unlink()
    with pytest.raises(MarkerError, match=rf"^{folder}: \d+ entries, .*recorded \d+ .*snakemake -f "):
        check_data_marker("ade150", root)
    shutil.rmtree(folder)
    with pytest.raises(MarkerError, match=rf"^{folder}: missing, but .*ade150.prepare.done vouches for it"):
        check_data_marker("ade150", root)
    from fisa.data.datasets import build_dataset
    with pytest.raises(MarkerError):
        build_dataset("ade150", "val", root, require_marker=True)
    assert (root / ".fisa/ade150.prepare.done").exists()   # the marker is left for the rerun to replace


# ---- results honour the umask ------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o027])
def test_results_are_as_readable_as_the_umask_allows(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        atomic_torch_save(tmp_path / "a.pt", {"x": torch.zeros(1)})
        with open(tmp_path / "reference", "w") as fh:   # what a plain open() makes: the reference
            fh.write("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "reference").stat().st_mode)
    assert want == 0o666 & ~umask
    for name in ("a.txt", "a.json", "a.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name


def test_entry_point_own_error_class_is_one_line(tmp_path):
    """An error class of the module run as __main__ (analysis.aggregate's ResultFileError)."""
    bad = tmp_path / "results/small/eval/fisa/seed0/ade150.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"experiment": "fisa", "metr')
    res = subprocess.run([sys.executable, "-m", "analysis.aggregate", "--preset", "small", "--eval-jsons", str(bad),
                          "--metrics-out", str(tmp_path / "m.csv"), "--per-class-out", str(tmp_path / "p.csv")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {bad}: not valid JSON") and f"snakemake -f {bad}" in last, last
    assert not (tmp_path / "m.csv").exists()


def test_truncated_generator_safetensors_is_named(tmp_path, capsys):
    """The generator loader (transformers' from_pretrained) on a truncated model.safetensors."""
    from fisa.models.generator import build_generator_architecture, generator_dir, load_generator

    entry = {"source": "harness", "config": "fisa-tiny-m2f-swin"}
    out = generator_dir(tmp_path, "swin_b")
    build_generator_architecture(entry).save_pretrained(str(out))
    weights = out / "model.safetensors"
    _truncate(weights, 0.3)
    line = _one_line(capsys, lambda a: load_generator("swin_b", entry, str(tmp_path)))
    assert line.startswith(f"error: {weights}: ") and "checkpoint" in line.split(" — ", 1)[1], line
