"""fisa.data.download against a local HTTP server: resume, retries, verification, manual datasets."""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_download_helpers import FileServer, write_sources  # noqa: E402

from fisa.data import download as dl  # noqa: E402
from raw_fixtures import md5_of, sources_for, write_raw_sources  # noqa: E402


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw")
    write_raw_sources(out, seed=0)
    return out


@pytest.fixture
def server(raw):
    with FileServer(raw) as srv:
        yield srv


@pytest.fixture
def sources(server):
    return sources_for(server.url)["datasets"]


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_download_extracts_records_and_marks_done(tmp_path, server, sources, raw):
    marker = dl.download_dataset("ade150", tmp_path, sources, backoff=0)
    assert dl.marker_path(tmp_path, "ade150", "download").exists()
    on_disk = json.loads(dl.marker_path(tmp_path, "ade150", "download").read_text())
    assert on_disk["files"] == marker["files"]
    by_name = {f["name"]: f for f in marker["files"]}
    for name in ("ADEChallengeData2016.zip", "annotations_instance.tar", "ade20k_instance_catid_mapping.txt"):
        assert by_name[name]["sha256"] == _sha(raw / name)
        assert _sha(tmp_path / "downloads" / name) == _sha(raw / name)
    assert by_name["ADEChallengeData2016.zip"]["verified_by"] == "zip integrity"
    assert (tmp_path / "ADEChallengeData2016/images/validation/ADE_val_00000001.jpg").exists()
    assert (tmp_path / "ADEChallengeData2016/annotations_instance/validation/ADE_val_00000001.png").exists()
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob(".staging-*"))


def test_nested_panoptic_zips_are_extracted(tmp_path, server, sources):
    dl.download_dataset("coco", tmp_path, sources, backoff=0)
    coco = tmp_path / "coco"
    assert sorted(p.name for p in (coco / "panoptic_val2017").iterdir()) == ["000000000139.png", "000000000140.png"]
    assert (coco / "annotations/panoptic_train2017.json").exists()
    assert not (coco / "annotations/panoptic_coco_categories.json").exists()  # `only` filters members
    assert (coco / "train2014/COCO_train2014_000000000025.jpg").exists()


def test_dropped_connection_resumes_with_range(tmp_path, server, sources, raw):
    name = "ADEChallengeData2016.zip"
    server.faults[name] = {"drop_after": 1000, "times": 2}
    dl.download_dataset("ade150", tmp_path, sources, backoff=0)
    assert _sha(tmp_path / "downloads" / name) == _sha(raw / name)
    ranges = [r for n, r in server.requests if n == name]
    assert ranges == [None, "bytes=1000-", "bytes=2000-"]


def test_server_ignoring_range_restarts_from_zero(tmp_path, server, sources, raw):
    name = "ADEChallengeData2016.zip"
    server.faults[name] = {"drop_after": 700, "times": 1, "ignore_range": True}
    dl.download_dataset("ade150", tmp_path, sources, backoff=0)
    assert _sha(tmp_path / "downloads" / name) == _sha(raw / name)


def test_truncated_archive_is_never_marked_done(tmp_path, server, sources):
    # The server always stops 40 bytes short: every retry fails; nothing counts as done.
    name = "val2017.zip"
    size = (server.directory / name).stat().st_size
    server.faults[name] = {"truncate": size - 40}
    with pytest.raises(dl.DownloadError, match=r"could not download val2017\.zip.*closed after"):
        dl.download_dataset("coco", tmp_path, sources, retries=2, backoff=0)
    assert not (tmp_path / "downloads" / name).exists()
    assert not dl.marker_path(tmp_path, "coco", "download").exists()
    assert not (tmp_path / ".fisa/files" / f"{name}.json").exists()


def test_truncated_file_served_as_complete_fails_integrity(tmp_path, server, raw):
    # A server that *says* the short file is complete: zip integrity catches it.
    short = tmp_path / "srv"
    short.mkdir()
    data = (raw / "refcoco.zip").read_bytes()
    (short / "refcoco.zip").write_bytes(data[: len(data) - 60])
    with FileServer(short) as srv:
        src = sources_for(srv.url)["datasets"]
        with pytest.raises(dl.DownloadError, match=r"refcoco\.zip.*not a complete, readable zip"):
            dl.download_dataset("refcoco", tmp_path / "root", src, backoff=0)
    assert not (tmp_path / "root/downloads/refcoco.zip").exists()
    assert not list((tmp_path / "root/downloads").glob("*.part"))  # a corrupt body is discarded, not resumed
    assert not dl.marker_path(tmp_path / "root", "refcoco", "download").exists()


def test_corrupted_byte_fails_crc(tmp_path, server, sources):
    server.faults["refcoco.zip"] = {"corrupt": True}
    with pytest.raises(dl.DownloadError, match=r"refcoco\.zip"):
        dl.download_dataset("refcoco", tmp_path, sources, backoff=0)
    assert not dl.marker_path(tmp_path, "refcoco", "download").exists()


def test_published_checksum_verified_and_mismatch_reported(tmp_path, server, sources, raw):
    src = copy.deepcopy(sources)
    src["refcoco"]["files"][0]["md5"] = md5_of(raw / "refcoco.zip")
    rec = dl.download_dataset("refcoco", tmp_path / "ok", src, backoff=0)
    assert rec["files"][0]["verified_by"] == "published md5"

    src["refcoco"]["files"][0]["md5"] = "0" * 32
    with pytest.raises(dl.DownloadError) as e:
        dl.download_dataset("refcoco", tmp_path / "bad", src, backoff=0)
    msg = str(e.value)
    assert "refcoco.zip: md5 mismatch: expected " + "0" * 32 in msg and md5_of(raw / "refcoco.zip") in msg
    assert not (tmp_path / "bad/downloads/refcoco.zip").exists()
    assert not dl.marker_path(tmp_path / "bad", "refcoco", "download").exists()


def test_recorded_sha256_is_checked_on_every_later_use(tmp_path, server, sources):
    dl.download_dataset("refcoco", tmp_path, sources, backoff=0)
    n_requests = len(server.requests)
    dl.download_dataset("refcoco", tmp_path, sources, backoff=0)  # reuse: no new request
    assert len(server.requests) == n_requests
    archive = tmp_path / "downloads/refcoco.zip"
    archive.write_bytes(archive.read_bytes() + b"x")
    with pytest.raises(dl.DownloadError, match=r"refcoco\.zip: sha256 .* differs from the one recorded"):
        dl.download_dataset("refcoco", tmp_path, sources, backoff=0)


def test_dead_primary_url_falls_back_to_mirror(tmp_path, server, sources, raw):
    src = copy.deepcopy(sources)
    f = src["refcoco"]["files"][0]
    f["urls"] = [server.url + "/gone/refcoco.zip", f["urls"][0]]
    dl.download_dataset("refcoco", tmp_path, src, backoff=0)
    assert [n for n, _ in server.requests] == ["gone/refcoco.zip", "refcoco.zip"]  # 404: no retries of a dead link
    assert _sha(tmp_path / "downloads/refcoco.zip") == _sha(raw / "refcoco.zip")


def test_missing_manual_dataset_explains_and_exits_nonzero(tmp_path, sources, raw, capsys):
    path = write_sources(tmp_path, {"version": 1, "datasets": sources})
    rc = dl.main(["--dataset", "mapillary", "--root", str(tmp_path / "root"), "--sources", str(path)])
    err = capsys.readouterr().err
    assert rc == 2
    expected = (tmp_path / "root/downloads/mapillary-vistas-dataset_public_v1.2.zip").resolve()
    assert f"put the archive exactly here: {expected}" in err
    assert "https://www.mapillary.com/dataset/vistas" in err and "registration" in err
    assert not dl.marker_path(tmp_path / "root", "mapillary", "download").exists()

    # Put it there: the same command now verifies, extracts and marks done.
    shutil.copy(raw / expected.name, expected)
    assert dl.main(["--dataset", "mapillary", "--root", str(tmp_path / "root"), "--sources", str(path)]) == 0
    assert (tmp_path / "root/mapillary_vistas/validation/panoptic/panoptic_2018.json").exists()
    rec = json.loads(dl.marker_path(tmp_path / "root", "mapillary", "download").read_text())
    assert rec["files"][0]["sha256"] == _sha(expected)


def test_manual_archive_that_is_corrupt_is_rejected(tmp_path, sources, raw):
    dest = tmp_path / "downloads/ADE20K_2021_17_01.zip"
    dest.parent.mkdir(parents=True)
    dest.write_bytes((raw / "ADE20K_2021_17_01.zip").read_bytes()[:500])
    with pytest.raises(dl.DownloadError, match="ADE20K_2021_17_01.zip: not a complete, readable zip"):
        dl.download_dataset("ade847", tmp_path, sources, backoff=0)
    assert not dl.marker_path(tmp_path, "ade847", "download").exists()


def test_already_extracted_tree_is_not_downloaded_again(tmp_path, server, sources):
    (tmp_path / "mapillary_vistas/validation/images").mkdir(parents=True)
    rec = dl.download_dataset("mapillary", tmp_path, sources, backoff=0)
    assert rec["files"][0]["status"] == "found extracted"
    assert server.requests == []


def test_interrupted_extraction_is_redone(tmp_path, server, sources):
    dl.download_dataset("refcoco", tmp_path, sources, backoff=0)
    shutil.rmtree(tmp_path / "refcoco")  # e.g. deleted or never finished: the record's entries are gone
    dl.download_dataset("refcoco", tmp_path, sources, backoff=0)
    assert (tmp_path / "refcoco/refcoco/refs(unc).p").exists()


def test_unknown_dataset_and_bad_sources_file(tmp_path):
    with pytest.raises(dl.DownloadError, match="unknown dataset 'cityscapes'.*coco"):
        dl.download_dataset("cityscapes", tmp_path)
    bad = tmp_path / "s.yaml"
    bad.write_text("datasets:\n  x:\n    files:\n      - name: a.zip\n        md5: nothex\n        urls: [http://x]\n")
    with pytest.raises(dl.DownloadError, match=r"datasets.x.files\[0\] \(a.zip\): 'md5' is not a hex digest"):
        dl.load_sources(bad)


def test_real_sources_file_is_complete():
    src = dl.load_sources()
    assert set(src) == {"coco", "ade150", "ade847", "pc59", "pc459", "mapillary", "refcoco", "refcocoplus"}
    manual = {name for name, spec in src.items() for f in spec["files"] if f.get("manual")}
    assert manual == {"mapillary", "ade847"}
    urls = [u for spec in src.values() for f in spec["files"] for u in f.get("urls", [])]
    # dead links only ever as the last fallback
    refcoco = src["refcoco"]["files"][0]["urls"]
    assert refcoco[0].startswith("https://web.archive.org/") and "bvisionweb1" in refcoco[-1]
    assert "stanford.edu" in src["pc459"]["files"][2]["urls"][-1]
    assert not src["pc459"]["files"][2]["urls"][0].startswith("https://www.cs.stanford.edu")
    assert all(u.startswith(("http://", "https://")) for u in urls)


def test_concurrent_jobs_sharing_a_file_download_it_once(tmp_path, server, sources, raw):
    # pc59 and pc459 both list VOC2010 and trainval_merged.json; their jobs may run at once.
    import threading

    errors = []

    def run(name):
        try:
            dl.download_dataset(name, tmp_path, sources, backoff=0)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("pc59", "pc459")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    fetched = [n for n, _ in server.requests]
    assert fetched.count("VOCtrainval_03-May-2010.tar") == 1 and fetched.count("trainval_merged.json") == 1
    assert _sha(tmp_path / "downloads/VOCtrainval_03-May-2010.tar") == _sha(raw / "VOCtrainval_03-May-2010.tar")
    assert dl.marker_path(tmp_path, "pc59", "download").exists() and dl.marker_path(tmp_path, "pc459", "download").exists()


def test_ade847_release_under_either_accepted_folder_is_found(tmp_path, server, sources):
    (tmp_path / "ade/ADE20K_2021_17_01").mkdir(parents=True)
    (tmp_path / "ade/ADE20K_2021_17_01/index_ade20k.pkl").write_bytes(b"")
    rec = dl.download_dataset("ade847", tmp_path, sources, backoff=0)
    status = {f["name"]: f["status"] for f in rec["files"]}
    assert status == {"ADE20K_2021_17_01.zip": "found extracted", "prepare_ade20k_full_sem_seg.py": "verified"}


def test_cli_as_the_workflow_calls_it(tmp_path, server, sources):
    # Same command line and redirection as workflow/rules/data.smk; exit status is what Snakemake sees.
    import subprocess

    path = write_sources(tmp_path, {"version": 1, "datasets": sources})
    root = tmp_path / "root"
    log = tmp_path / "download.log"
    cmd = f"{sys.executable} -m fisa.data.download --dataset refcoco --root {root} --sources {path} > {log} 2>&1"
    assert subprocess.run(cmd, shell=True).returncode == 0
    assert "refcoco: download done" in log.read_text()
    assert dl.marker_path(root, "refcoco", "download").exists()
    cmd = cmd.replace("refcoco", "mapillary")
    assert subprocess.run(cmd, shell=True).returncode == 2
    assert "put the archive exactly here" in log.read_text()
    assert not dl.marker_path(root, "mapillary", "download").exists()


def test_many_drops_with_progress_do_not_exhaust_retries(tmp_path, server, sources, raw):
    # 6 drops, each after some bytes: more than --retries 2, but every attempt makes progress.
    name = "ADEChallengeData2016.zip"
    server.faults[name] = {"drop_after": 500, "times": 6}
    dl.download_dataset("ade150", tmp_path, sources, retries=2, backoff=0)
    assert _sha(tmp_path / "downloads" / name) == _sha(raw / name)
    assert len([n for n, _ in server.requests if n == name]) == 7


def test_delete_archives_keeps_later_runs_offline(tmp_path, server, sources):
    rec = dl.download_dataset("refcoco", tmp_path, sources, backoff=0, delete_archives=True)
    assert rec["files"][0]["archive_deleted"] is True
    assert not (tmp_path / "downloads/refcoco.zip").exists()
    assert (tmp_path / "refcoco/refcoco/instances.json").exists()
    n = len(server.requests)
    assert dl.download_dataset("refcoco", tmp_path, sources, backoff=0)["files"][0]["status"] == "found extracted"
    assert len(server.requests) == n


def test_transient_server_errors_are_retried(tmp_path, server, sources, raw):
    server.faults["refcoco.zip"] = {"status": 503, "status_times": 2}
    dl.download_dataset("refcoco", tmp_path, sources, retries=3, backoff=0)
    assert [n for n, _ in server.requests] == ["refcoco.zip"] * 3
    assert _sha(tmp_path / "downloads/refcoco.zip") == _sha(raw / "refcoco.zip")

    server.faults["refcoco+.zip"] = {"status": 503}
    with pytest.raises(dl.DownloadError, match=r"could not download refcoco\+\.zip .*HTTP 503"):
        dl.download_dataset("refcocoplus", tmp_path, sources, retries=2, backoff=0)
    assert [n for n, _ in server.requests].count("refcoco+.zip") == 3  # first try + 2 retries
