"""Domain-gap measures: zero / chance on identical sets, clearly larger on blurred+noisy sets; `dxr evaluate
--domain` end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage.filters import gaussian

from dxr_core.cli import main
from dxr_core.data.pairs import write_image
from dxr_core.data.synthetic import make_hq
from dxr_core.errors import InputError
from dxr_core.metrics.domain import (classifier_two_sample_test, domain_gap, histogram_distance, prepare,
                                     radial_power_spectrum, spectrum_distance)

SAMPLE = Path(__file__).parent / "data" / "real_cxr_sample"


@pytest.fixture(scope="module")
def sets():
    a = [make_hq(128, s) for s in range(24)]
    a2 = [make_hq(128, s) for s in range(1000, 1024)]  # same domain, other images
    rng = np.random.default_rng(0)
    bad = [np.clip(gaussian(x, 1.5) + rng.normal(0, 0.03, x.shape), 0, 1).astype(np.float32) for x in a]
    return a, a2, bad


def test_identical_sets_are_zero_and_chance(sets):
    a, _, _ = sets
    r = domain_gap(a, a, size=128)
    assert r["spectrum"]["distance"] == 0.0 and r["histogram"]["distance"] == 0.0
    assert r["c2st"]["accuracy"] == 0.5 and r["c2st"]["p_value"] > 0.5


def test_blurred_noisy_set_is_clearly_further(sets):
    a, a2, bad = sets  # bad = a blurred (sigma 1.5 px) + noisy (sigma 0.03) version of a
    same, deg = domain_gap(a, a2, size=128), domain_gap(a, bad, size=128)
    assert same["spectrum"]["distance"] < 0.08  # other images of the same domain: small
    assert deg["spectrum"]["distance"] > 0.2 and deg["spectrum"]["distance"] > 4 * same["spectrum"]["distance"]
    assert deg["histogram"]["distance"] > 0.004  # identical set: exactly 0 (test above)
    assert same["c2st"]["accuracy"] <= 0.75 and same["c2st"]["p_value"] > 0.01
    assert deg["c2st"]["accuracy"] > 0.8 and deg["c2st"]["p_value"] < 1e-3
    # noise lifts the high-frequency end of the spectrum (after the blur took it down)
    s = deg["spectrum"]
    assert len(s["frequency"]) == len(s["log10_power_a"]) == 32


def test_brightness_shift_moves_histograms_not_spectra(sets):
    a = [0.1 + 0.8 * x for x in sets[0]]  # in [0.1, 0.9]: a shift by -0.1 needs no clipping
    shifted = [x - 0.1 for x in a]
    h = histogram_distance(a, shifted, size=128)
    for r in ("dark", "middle", "bright"):
        assert h["regions"][r]["wasserstein"] == pytest.approx(0.1, abs=0.01)
    assert spectrum_distance(a, shifted, size=128)["distance"] < 1e-3  # spectra are contrast-normalised


def test_histogram_with_label_maps(sets):
    a, _, _ = sets
    lab = np.zeros((128, 128), np.int64)
    lab[:, :40], lab[:, 40:88], lab[:, 88:] = 1, 2, 3
    h = histogram_distance(a[:4], a[4:8], size=128, labels_a=[lab] * 4, labels_b=[lab] * 4)
    assert h["rule"] == "labels" and h["distance"] > 0
    with pytest.raises(InputError, match="one label map per image"):
        histogram_distance(a[:4], a[4:8], size=128, labels_a=[lab] * 3, labels_b=[lab] * 4)


def test_power_spectrum_white_vs_smooth_noise():
    rng = np.random.default_rng(1)
    white = np.clip(0.5 + 0.1 * rng.standard_normal((128, 128)), 0, 1)
    f, pw = radial_power_spectrum(prepare(white, 128))
    _, ps = radial_power_spectrum(prepare(gaussian(white, 2.0), 128))
    assert f[0] > 0 and f[-1] < 0.5
    assert abs(pw[-4:].mean() - pw[2:6].mean()) < 0.3  # flat: white noise
    assert ps[2:6].mean() - ps[-4:].mean() > 2.0  # blurred: high frequencies orders of magnitude lower


def test_c2st_needs_four_images_and_is_seeded(sets):
    a, _, bad = sets
    with pytest.raises(InputError, match="at least 4"):
        classifier_two_sample_test(a[:3], bad[:3], size=128)
    r1 = classifier_two_sample_test(a, bad, seed=3, size=128)
    assert r1 == classifier_two_sample_test(a, bad, seed=3, size=128)
    assert r1["n_test"] == 24 and r1["n_train"] == 24


def _patients(first: int, seed: int, n_patients: int = 4, per_patient: int = 8):
    """Images of a few 'patients', each with its own look (gamma, blur), as a clinical set has."""
    rng = np.random.default_rng(seed)
    imgs, groups = [], []
    for p in range(n_patients):
        gamma, sigma = float(np.exp(rng.normal(0, 0.9))), float(rng.uniform(0, 2.5))
        for j in range(per_patient):
            x = make_hq(128, first + p * per_patient + j)
            imgs.append(np.clip(gaussian(x, sigma) ** gamma, 0, 1).astype(np.float32))
            groups.append(f"p{p}")
    return imgs, groups


def test_c2st_split_by_patient_tests_the_domain_not_the_people():
    """Two sets of one domain, different patients: random halves let the classifier learn the patients (it
    tells the sets apart), the split by patient does not; a real difference (noise) is still found by patient."""
    a, ga = _patients(0, seed=1)
    b, gb = _patients(5000, seed=2)
    rng = np.random.default_rng(0)
    noisy = [np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32) for x in b]
    random_split = classifier_two_sample_test(a, b, size=128)
    by_patient = classifier_two_sample_test(a, b, size=128, groups_a=ga, groups_b=gb)
    found = classifier_two_sample_test(a, noisy, size=128, groups_a=ga, groups_b=gb)
    assert random_split["accuracy"] > 0.8 and random_split["split"] == "random halves"
    assert by_patient["accuracy"] < 0.65 and by_patient["split"] == "by patient, 4 folds"
    assert by_patient["n_test"] == 64  # every image predicted once
    assert found["accuracy"] > 0.75 and found["p_value"] < 1e-3
    with pytest.raises(InputError, match="both sets"):
        classifier_two_sample_test(a, b, size=128, groups_a=ga)
    with pytest.raises(InputError, match="at least 2 patients"):
        classifier_two_sample_test(a, b, size=128, groups_a=["x"] * len(a), groups_b=gb)


def test_prepare_common_grid():
    img = np.zeros((300, 200), np.float32)
    img[50:250, :] = 1.0  # central square crop of 200 x 200 -> rows 50..249 are all 1
    out = prepare(img, 64)
    assert out.shape == (64, 64) and out.min() > 0.99
    with pytest.raises(InputError):
        prepare(np.zeros((4, 4)), 64)


def test_cli_evaluate_domain_on_real_sample(tmp_path, capsys):
    # a blurred + noisy copy of the real sample, written as 16-bit PNG
    rng = np.random.default_rng(0)
    deg = tmp_path / "deg"
    for p in sorted(SAMPLE.glob("*.png")):
        from dxr_core.data.radiographs import load_radiograph

        img = load_radiograph(p)[0]
        write_image(np.clip(gaussian(img, 2.0) + rng.normal(0, 0.03, img.shape), 0, 1), deg / p.name)
    assert main(["evaluate", "--pred", str(deg), "--domain", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "power-spectrum distance" in out and "classifier two-sample test" in out
    res = json.loads((deg / "domain_gap.json").read_text())
    assert res["n_a"] == res["n_b"] == 8 and res["size"] == 256
    assert res["spectrum"]["distance"] > 0.3
    assert main(["evaluate", "--pred", str(SAMPLE), "--domain", str(SAMPLE), "--domain-json",
                 str(tmp_path / "self.json")]) == 0
    self_res = json.loads((tmp_path / "self.json").read_text())
    assert self_res["spectrum"]["distance"] == 0.0 and self_res["c2st"]["accuracy"] == 0.5
    # split by patient: the regex names each file's patient (here its first character: 6 'patients')
    assert main(["evaluate", "--pred", str(deg), "--domain", str(SAMPLE), "--domain-groups", "^(.)",
                 "--domain-json", str(tmp_path / "grouped.json")]) == 0
    grouped = json.loads((tmp_path / "grouped.json").read_text())
    assert grouped["c2st"]["split"] == "by patient, 5 folds" and grouped["c2st"]["n_test"] == 16
    assert main(["evaluate", "--pred", str(deg), "--domain", str(SAMPLE), "--domain-groups", "^zz"]) == 2
    assert "does not match" in capsys.readouterr().err
    # the paired mode is unchanged: --ref writes metrics.json
    assert main(["evaluate", "--pred", str(deg), "--ref", str(SAMPLE)]) == 0
    paired = json.loads((deg / "metrics.json").read_text())
    assert paired["count"] == 8 and paired["mean"]["psnr"] < 40
    capsys.readouterr()
    # errors: one line, exit 2
    assert main(["evaluate", "--pred", str(deg)]) == 2
    assert main(["evaluate", "--pred", str(deg), "--domain", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("dxr evaluate: error:") for line in err)
