"""`dxr make-pairs`: aligned LQ/HQ pairs from real radiographs, split-aware, seeded and resumable."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dxr_core.cli import main as dxr

SAMPLE = Path(__file__).parent / "data" / "real_cxr_sample"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    from dxr_core.data.radiographs import patient_split

    out = tmp_path_factory.mktemp("split") / "split.csv"
    patient_split(SAMPLE / "metadata.csv", out, image_dir=SAMPLE, fractions=(0.5, 0.25, 0.25), seed=0)
    return out


def test_pairs_are_aligned_seeded_and_resume(tmp_path):
    from dxr_core.data.pairs import find_pairs, read_image
    from dxr_core.degrade.pairs import make_pairs

    files = sorted(SAMPLE.glob("*.png"))[:3]
    recs = make_pairs(files, tmp_path / "a", method="mix", hq_size=128, seed=1, variants=2, progress=False)
    assert len(recs) == 6 and {r["method"] for r in recs} <= {"area", "bicubic", "high_order"}
    pairs = find_pairs(tmp_path / "a")
    assert len(pairs) == 6
    for lq_path, hq_path in pairs:
        lq, hq = read_image(lq_path), read_image(hq_path)
        assert hq.shape == (128, 128) and lq.shape == (64, 64)
        # aligned: the LQ is a degraded copy of the same HQ (same content at the LQ scale)
        down = hq.reshape(64, 2, 64, 2).mean(axis=(1, 3))
        assert np.corrcoef(down.ravel(), lq.ravel())[0, 1] > 0.9
    # same seed: same bytes; resume writes nothing new
    make_pairs(files, tmp_path / "b", method="mix", hq_size=128, seed=1, variants=2, progress=False)
    for name in ("lq", "hq"):
        for f in sorted((tmp_path / "a" / name).glob("*.png")):
            assert f.read_bytes() == (tmp_path / "b" / name / f.name).read_bytes()
    mtimes = {f: f.stat().st_mtime_ns for f in (tmp_path / "a").rglob("*.png")}
    again = make_pairs(files, tmp_path / "a", method="mix", hq_size=128, seed=1, variants=2, progress=False)
    assert again == recs and all(f.stat().st_mtime_ns == t for f, t in mtimes.items())
    # another seed draws other degradations / noise
    make_pairs(files, tmp_path / "c", method="high_order", hq_size=128, seed=2, progress=False)
    a = read_image(next((tmp_path / "c" / "lq").glob("*.png")))
    assert a.shape == (64, 64)


def test_cli_make_pairs_uses_only_the_split(tmp_path, manifest, capsys):
    from dxr_core.data.radiographs import read_manifest

    rows = read_manifest(manifest)
    test_files = {r["file"] for r in rows if r["split"] == "test"}
    train_files = {r["file"] for r in rows if r["split"] == "train"}
    assert test_files and train_files
    out = tmp_path / "pairs"
    assert dxr(["make-pairs", "--hq", str(SAMPLE), "--manifest", str(manifest), "--split", "train", "--out", str(out),
                "--hq-size", "64", "--method", "area", "--no-progress"]) == 0
    made = {json.loads(line)["source"] for line in (out / "pairs.jsonl").read_text().splitlines()}
    assert made == train_files and not made & test_files


def test_cli_make_pairs_errors(tmp_path, capsys):
    assert dxr(["make-pairs", "--hq", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert dxr(["make-pairs", "--hq", str(SAMPLE), "--out", str(tmp_path / "o"), "--method", "nope"]) == 2
    assert "Unknown method" in capsys.readouterr().err


def test_cli_make_pairs_method_options(tmp_path, capsys):
    """--option reaches the single method (recorded in pairs.jsonl); with the mix it is refused; a wrong one is
    named."""
    out = tmp_path / "p"
    assert dxr(["make-pairs", "--hq", str(SAMPLE), "--out", str(out), "--hq-size", "64", "--method", "high_order",
                "--option", "noise_sigma=[0.05, 0.05]", "--no-progress"]) == 0
    recs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert recs and all(r["options"]["noise_sigma"] == [0.05, 0.05] for r in recs)
    assert dxr(["make-pairs", "--hq", str(SAMPLE), "--out", str(tmp_path / "m"), "--option", "noise_sigma=0.1"]) == 2
    assert "single --method" in capsys.readouterr().err
    assert dxr(["make-pairs", "--hq", str(SAMPLE), "--out", str(tmp_path / "b"), "--method", "bicubic", "--option",
                "colour=1", "--no-progress"]) == 2
    assert "colour" in capsys.readouterr().err


def test_match_tone_pairs_differ_in_detail_not_tone(tmp_path, monkeypatch):
    """--match-tone: an LQ whose degradation changed the grey-level curve is mapped back onto the HQ's tone."""
    import dxr_core.degrade.api as api
    from dxr_core.data.pairs import read_image
    from dxr_core.degrade.pairs import make_pairs
    from dxr_core.degrade.tone import tone_quantiles

    real = api.degrade

    def darker(hq, method, seed=0, scale=2.0, return_params=False, **kw):  # a degradation with a tone change
        lq, params = real(hq, "area", seed=seed, scale=scale, return_params=True)
        return (lq ** 2.0, params) if return_params else lq ** 2.0

    monkeypatch.setattr(api, "degrade", darker)
    files = sorted(SAMPLE.glob("*.png"))[:2]
    plain = make_pairs(files, tmp_path / "plain", method="area", hq_size=128, seed=0, progress=False)
    tm = make_pairs(files, tmp_path / "tm", method="area", hq_size=128, seed=0, progress=False, match_tone=True)
    assert all(r["match_tone"] for r in tm) and not any("match_tone" in r for r in plain)
    for r in tm:
        hq = read_image(tmp_path / "tm" / "hq" / f"{r['name']}.png")
        lq_plain = read_image(tmp_path / "plain" / "lq" / f"{r['name']}.png")
        lq = read_image(tmp_path / "tm" / "lq" / f"{r['name']}.png")
        q = tone_quantiles(hq)
        assert np.abs(tone_quantiles(lq_plain) - q).max() > 0.1  # the fake degradation did change the tone
        assert np.abs(tone_quantiles(lq) - q).max() < 0.02  # and matching put it back
        down = hq.reshape(64, 2, 64, 2).mean(axis=(1, 3))
        assert np.corrcoef(down.ravel(), lq.ravel())[0, 1] > 0.95  # same content, still aligned
