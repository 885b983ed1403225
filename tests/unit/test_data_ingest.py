"""landing -> raw on a local lake: accepted files, every quarantine reason, idempotence, crash safety."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from parking_ml.data.ingest import RAW_MANIFEST, ingest, read_raw_manifest, read_reasons
from parking_ml.data.validation import FIXES, parse_landing_key
from parking_ml.lake import Lake
from tests.fakes.landing import geojson_bytes, png_bytes, write_landing
from tests.fakes.scenes import scene


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(f"file://{tmp_path / 'lake'}", {})


def _bomb_png(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_parse_landing_key():
    f = parse_landing_key("landing/b1/lotA/sub/x.mask.png")
    assert (f.batch, f.site, f.rel, f.role, f.kind, f.group) == (
        "b1",
        "lotA",
        "lotA/sub/x.mask.png",
        "annotation",
        "mask",
        "lotA/sub/x",
    )
    assert parse_landing_key("landing/b1/lotA/.x.png.tmp-123") is None
    assert parse_landing_key("landing/b1/lotA/x.png.tmp-ab12cd34") is None
    assert parse_landing_key("landing/b1/x.tif").site == ""


def test_valid_batch_is_accepted_content_addressed(lake):
    masks = write_landing(lake, "b1", sites=2, per_site=2, size=96)
    summary = ingest(lake)
    assert summary["accepted"] == 4 and summary["quarantined"] == 0 and summary["raw_images"] == 4
    m = read_raw_manifest(lake)
    assert sorted(m["site"].unique()) == ["site0", "site1"]
    assert set(m["annotation_format"]) == {"mask", "geojson", "coco"}
    both = m[m["source"] == "landing/b1/site1/tile1.png"].iloc[0]  # mask + geojson: mask labels, geojson stalls
    assert both["annotation_format"] == "mask" and both["stalls_format"] == "geojson"
    for row in m.itertuples():
        assert lake.exists(f"raw/images/{row.sha256}.png")
        assert lake.exists(row.annotation)
        assert (row.width, row.height, row.format) == (96, 96, "png")
        assert row.source in masks
    # landing left in place
    assert len(lake.list("landing/b1/")) == 9


def _codes(lake: Lake, batch: str) -> dict[str, str]:
    return {r["file"]: r["code"] for r in read_reasons(lake, batch)}


def test_every_quarantine_reason(lake):
    write_landing(lake, "b0", sites=1, per_site=1, size=96)
    assert ingest(lake)["accepted"] == 1
    good_rgb, good_mask, stalls = scene(96, seed=11)
    put = lake.write_bytes
    base = "landing/b2/s"
    put(f"{base}/ok.png", png_bytes(good_rgb))
    put(f"{base}/ok.mask.png", png_bytes(good_mask))
    put(f"{base}/empty.png", b"")
    put(f"{base}/empty.mask.png", png_bytes(good_mask))
    cut = png_bytes(scene(96, seed=12)[0])
    put(f"{base}/cut.png", cut[: len(cut) // 2])
    put(f"{base}/cut.mask.png", png_bytes(good_mask))
    put(f"{base}/small.png", png_bytes(scene(48, seed=13)[0]))
    put(f"{base}/small.mask.png", png_bytes(scene(48, seed=13)[1]))
    put(f"{base}/huge.png", _bomb_png(50_000, 50_000))
    put(f"{base}/huge.mask.png", png_bytes(good_mask))
    put(f"{base}/fake.png", b"this is text, not a picture")
    put(f"{base}/fake.geojson", geojson_bytes(stalls))
    put(f"{base}/sizes.png", png_bytes(scene(96, seed=14)[0]))
    put(f"{base}/sizes.mask.png", png_bytes(np.zeros((80, 96), np.uint8)))
    put(f"{base}/values.png", png_bytes(scene(96, seed=15)[0]))
    bad_values = good_mask.copy()
    bad_values[5, 5] = 9
    put(f"{base}/values.mask.png", png_bytes(bad_values))
    put(f"{base}/outside.png", png_bytes(scene(96, seed=16)[0]))
    put(f"{base}/outside.geojson", geojson_bytes([{"rect": (400, 400, 420, 440), "status": "free"}]))
    put(f"{base}/half.png", png_bytes(scene(96, seed=17)[0]))  # mask bad, geojson fine: accepted via geojson
    put(f"{base}/half.mask.png", png_bytes(np.zeros((10, 10), np.uint8)))
    put(f"{base}/half.geojson", geojson_bytes(scene(96, seed=17)[2]))
    put(f"{base}/orphan.mask.png", png_bytes(good_mask))
    put(f"{base}/alone.png", png_bytes(scene(96, seed=18)[0]))
    put(f"{base}/copy.png", png_bytes(good_rgb))  # same bytes as ok.png in this batch
    put(f"{base}/copy.mask.png", png_bytes(good_mask))
    first = lake.read_bytes("landing/b0/site0/tile0.png")
    put(f"{base}/old.png", first)  # already in raw from batch b0
    put(f"{base}/old.mask.png", lake.read_bytes("landing/b0/site0/tile0.mask.png"))
    put(f"{base}/notes.txt", b"hello")
    put("landing/b2/nosite.png", png_bytes(scene(96, seed=19)[0]))
    put("landing/b2/nosite.mask.png", png_bytes(good_mask))

    summary = ingest(lake, ["b2"], max_pixels=1_000_000)
    codes = _codes(lake, "b2")
    expected = {
        "s/empty.png": "empty",
        "s/empty.mask.png": "image_rejected",
        "s/cut.png": "corrupt",
        "s/small.png": "too_small",
        "s/huge.png": "too_large",
        "s/fake.png": "unsupported_type",
        "s/fake.geojson": "image_rejected",
        "s/sizes.mask.png": "mask_size_mismatch",
        "s/sizes.png": "annotation_rejected",
        "s/values.mask.png": "bad_mask_values",
        "s/outside.geojson": "polygon_outside",
        "s/half.mask.png": "mask_size_mismatch",
        "s/orphan.mask.png": "orphan_annotation",
        "s/alone.png": "missing_annotation",
        "s/old.png": "duplicate",
        "s/old.mask.png": "image_rejected",
        "s/notes.txt": "unsupported_type",
        "nosite.png": "no_site",
    }
    for file, code in expected.items():
        assert codes.get(file) == code, (file, codes.get(file))
    # copy.png and ok.png share bytes: exactly one is accepted, the other is the duplicate
    assert {codes.get("s/copy.png"), codes.get("s/ok.png")} == {"duplicate", None}
    assert "s/half.png" not in codes
    m = read_raw_manifest(lake)
    accepted = set(m[m["batch"] == "b2"]["source"])
    assert accepted == {f"{base}/half.png", f"{base}/copy.png" if "s/ok.png" in codes else f"{base}/ok.png"}
    half = m[m["source"] == f"{base}/half.png"].iloc[0]
    assert half["annotation_format"] == "geojson" and half["stalls_format"] == "geojson"
    assert summary["accepted"] == 2 and summary["quarantined"] == len(codes) and summary["duplicates"] == 2
    for rec in read_reasons(lake, "b2"):
        assert set(rec) >= {"file", "site", "code", "reason", "fix", "batch", "ts"}
        assert rec["fix"] == FIXES[rec["code"]] and rec["batch"] == "b2"
        assert rec["file"].split("/")[-1] in rec["reason"] or rec["code"] in ("empty",)
        assert lake.read_bytes(f"quarantine/b2/{rec['file']}") == lake.read_bytes(f"landing/b2/{rec['file']}")
    huge = next(r for r in read_reasons(lake, "b2") if r["file"] == "s/huge.png")
    assert "50000x50000" in huge["reason"] and "PARKING_MAX_PIXELS" in huge["reason"]

    # a re-run adds nothing: no new rows, no repeated reasons
    again = ingest(lake, ["b2"], max_pixels=1_000_000)
    assert again["accepted"] == 0 and again["quarantined"] == 0
    assert again["skipped_duplicates"] == len(lake.list("landing/b2/"))
    assert len(read_reasons(lake, "b2")) == len(codes)
    assert len(read_raw_manifest(lake)) == len(m)

    # fixing a rejected annotation re-opens its group
    lake.write_bytes(f"{base}/sizes.mask.png", png_bytes(np.zeros((96, 96), np.uint8)))
    fixed = ingest(lake, ["b2"], max_pixels=1_000_000)
    assert fixed["accepted"] == 1 and fixed["quarantined"] == 0


def test_ingest_twice_equals_once_and_gsd_from_generator(lake, tmp_path):
    from parking_ml.synth import generate_dataset

    generate_dataset(tmp_path / "lake" / "landing" / "syn", n=4, seed=1, size=128, sites=2, progress=False)
    once = ingest(lake)
    assert once["accepted"] == 4 and once["quarantined"] == 0
    before = {k: lake.read_bytes(k) for k in lake.list("raw/")}
    twice = ingest(lake)
    assert twice["accepted"] == 0 and twice["quarantined"] == 0 and twice["skipped_duplicates"] == 12
    assert {k: lake.read_bytes(k) for k in lake.list("raw/")} == before
    m = read_raw_manifest(lake)
    assert m["gsd"].notna().all() and (m["stalls_format"] == "geojson").all()
    assert sorted(m["site"].unique()) == ["s1-site-0000", "s1-site-0001"]


def test_crash_mid_ingest_leaves_no_partial_file_and_rerun_completes(lake, monkeypatch):
    write_landing(lake, "b0", sites=1, per_site=1, size=96, seed=9)
    ingest(lake)
    manifest_before = lake.read_bytes(RAW_MANIFEST)
    raw_before = set(lake.list("raw/"))
    write_landing(lake, "b1", sites=2, per_site=2, size=96)
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] == 4:  # midway: the 4th object being written dies before its rename
            raise OSError("disk gone")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk gone"):
        ingest(lake)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert lake.read_bytes(RAW_MANIFEST) == manifest_before
    finals = [k for k in lake.list("raw/") if ".tmp-" not in k and k not in raw_before]
    assert len(finals) == 3
    assert any(".tmp-" in k for k in lake.list("raw/"))  # the interrupted write stayed a temp file
    for key in finals:  # whatever has a final name is whole
        assert lake.read_bytes(key) in {lake.read_bytes(k) for k in lake.list("landing/")}

    summary = ingest(lake)
    assert summary["accepted"] == 4 and summary["quarantined"] == 0
    m = read_raw_manifest(lake)
    assert len(m) == 5 and m["sha256"].is_unique
    assert ingest(lake)["accepted"] == 0


def test_geojson_saved_as_json_is_recorded_as_geojson(lake):
    rgb, _, stalls = scene(96, seed=30)
    lake.write_bytes("landing/b/s/x.png", png_bytes(rgb))
    lake.write_bytes("landing/b/s/x.json", geojson_bytes(stalls))
    assert ingest(lake)["accepted"] == 1
    row = read_raw_manifest(lake).iloc[0]
    assert row["annotation_format"] == "geojson" and row["annotation"].endswith(".geojson")
    assert row["stalls_format"] == "geojson"


def test_unknown_batch_names_the_fix(lake):
    write_landing(lake, "b1", sites=1, per_site=1, size=96)
    with pytest.raises(FileNotFoundError, match=r"nope.*available: \['b1'\]"):
        ingest(lake, ["nope"])


def test_a_batch_prefix_picks_the_batches_it_starts(lake):
    write_landing(lake, "2026-12-01", sites=1, per_site=1, size=64)
    write_landing(lake, "2026-12-02", sites=1, per_site=1, size=64, seed=1)
    write_landing(lake, "2026-11-30", sites=1, per_site=1, size=64, seed=2)
    with pytest.raises(FileNotFoundError, match=r"starts with '2027-'.*available: \['2026-11-30', '2026-12-01'"):
        ingest(lake, batch_prefix="2027-")
    assert ingest(lake, batch_prefix="2026-12-")["batches"] == ["2026-12-01", "2026-12-02"]
    assert ingest(lake, batch_prefix="2026-11-30")["batches"] == ["2026-11-30"]
    assert set(read_raw_manifest(lake)["batch"]) == {"2026-12-01", "2026-12-02", "2026-11-30"}


def test_reasons_are_json_lines(lake):
    lake.write_bytes("landing/b9/s/x.png", b"")
    ingest(lake)
    lines = lake.read_bytes("quarantine/b9/reasons.jsonl").decode().splitlines()
    assert [json.loads(line)["code"] for line in lines] == ["empty"]


def test_s3_overrides_from_connection_fields():
    from parking_ml.lake import s3_overrides

    assert s3_overrides(None, None, None) == {}
    assert s3_overrides("k", "s", {"endpoint_url": "http://e"}) == {
        "s3_endpoint_url": "http://e",
        "s3_access_key_id": "k",
        "s3_secret_access_key": "s",
    }
    assert s3_overrides(None, None, {"service_config": {"s3": {"endpoint_url": "http://m"}}}) == {
        "s3_endpoint_url": "http://m"
    }


def test_a_file_whose_partner_may_still_be_uploading_waits_then_is_quarantined(lake):
    """An annotation without its image, or an image without an annotation, younger than settle_s stays in
    landing for a later run; once its partner lands the pair is ingested with no quarantine entry, and once it
    has waited settle_s alone it is quarantined."""
    rgb, _, stalls = scene(96, seed=30)
    lake.write_bytes("landing/b/s/early.geojson", geojson_bytes(stalls))
    lake.write_bytes("landing/b/s/alone.png", png_bytes(scene(96, seed=31)[0]))
    first = ingest(lake, settle_s=600)
    assert (first["accepted"], first["quarantined"], first["waiting"]) == (0, 0, 2)
    assert read_reasons(lake, "b") == [] and not lake.exists("quarantine/b/s/early.geojson")

    lake.write_bytes("landing/b/s/early.png", png_bytes(rgb))
    second = ingest(lake, settle_s=600)
    assert (second["accepted"], second["quarantined"], second["waiting"]) == (1, 0, 1)
    assert read_raw_manifest(lake)["source"].tolist() == ["landing/b/s/early.png"]

    # an hour later the image still has no annotation
    hour_ago = lake.modified("landing/b/s/alone.png").timestamp() - 3600
    os.utime(lake.local_path("landing/b/s/alone.png"), (hour_ago, hour_ago))
    third = ingest(lake, settle_s=600)
    assert (third["accepted"], third["quarantined"], third["waiting"]) == (0, 1, 0)
    assert [(r["file"], r["code"]) for r in read_reasons(lake, "b")] == [("s/alone.png", "missing_annotation")]


def test_the_lake_reports_when_an_object_was_written(lake):
    import datetime as dt

    before = dt.datetime.now(dt.UTC)
    lake.write_bytes("landing/b/s/x.png", b"x")
    when = lake.modified("landing/b/s/x.png")
    assert when.tzinfo is not None
    assert abs((when - before).total_seconds()) < 60


def test_the_ingest_command_settles_by_the_setting_or_its_option(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from parking_ml.cli import app

    lake_dir = tmp_path / "lake"
    monkeypatch.setenv("PARKING_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("PARKING_LAKE_URL", f"file://{lake_dir}")
    Lake(f"file://{lake_dir}", {}).write_bytes("landing/b/s/early.geojson", geojson_bytes(scene(96, seed=32)[2]))
    runner = CliRunner()
    waited = runner.invoke(app, ["ingest"])
    assert waited.exit_code == 0, waited.output
    assert '"waiting": 1' in waited.output and '"quarantined": 0' in waited.output
    now = runner.invoke(app, ["ingest", "--settle-s", "0"])
    assert now.exit_code == 0, now.output
    assert '"waiting": 0' in now.output and '"quarantined": 1' in now.output
