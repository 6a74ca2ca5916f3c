"""Domain-gap distances between two *sets* of radiographs (e.g. real radiographs vs DRRs), with no download.

Unpaired: the sets may differ in size and content; each measure compares the two image *distributions*.

1. :func:`spectrum_distance` - radially averaged power spectrum (RAPSD) distance. Each image is put on a common
   pixel grid (:func:`prepare`), a central region is cropped, the mean is removed and the image divided by its
   standard deviation (so the *shape* of the spectrum is compared, not the contrast, which measure 2 covers), a
   2-D Hann window is applied, the power ``|FFT|^2`` is averaged in ``bins`` rings of radial frequency from
   1/(crop) to 0.5 cycles/pixel and its log10 is taken. The set's spectrum is the mean log-spectrum of its images;
   the distance is the root-mean-square difference of the two sets' mean log-spectra, in decades (0 = same,
   0.3 = a factor of 2 in power on average). Blur lowers the high-frequency end, noise lifts it, JPEG adds
   block-frequency bumps. The RAPSD is the classic descriptor of image texture / noise power (e.g. the noise
   power spectrum of radiography, IEC 62220-1; natural-image statistics, van der Schaaf & van Hateren, Vision
   Res. 1996).
2. :func:`histogram_distance` - regional intensity-histogram distance. In the central region of each image
   (values in [0, 1], bone bright) three regions are defined by a simple per-image rule on intensity quantiles:
   ``dark`` (below the 30th percentile: lung fields / air), ``middle`` (30th-80th: mediastinum, soft tissue,
   diaphragm) and ``bright`` (above the 80th: bone, spine, dense mediastinum). Alternatively a label map per image
   (1 = dark/lung, 2 = middle/mediastinum, 3 = bright/bone, 0 = ignored) can be given. Pixel values of a region are
   pooled over the set into a 256-bin histogram on [0, 1]; the distance per region is the 1-D Wasserstein
   (earth mover's) distance between the two sets' histograms, in intensity units (``scipy.stats.wasserstein_distance``);
   the summary is the mean over the three regions. A global brightness shift of ``d`` gives ``d`` in every region.
3. :func:`classifier_two_sample_test` - classifier two-sample test (C2ST; D. Lopez-Paz and M. Oquab, "Revisiting
   Classifier Two-Sample Tests", ICLR 2017, arXiv:1610.06545). Per image, a feature vector (:func:`image_features`:
   the log-RAPSD of measure 1, 11 intensity quantiles of the central region and the mean gradient magnitude at two
   scales); the larger set is subsampled to the size of the smaller (seeded); each set is split in halves (seeded);
   a standardised L2 logistic regression (scikit-learn) is trained on the first halves and its accuracy measured on
   the second halves (sets of equal size share one permutation, so a set compared with itself gives exactly 0.5).
   Accuracy 0.5 = indistinguishable, 1.0 = perfectly separable. Under the null hypothesis (same
   distribution) the number of correct test predictions is Binomial(n_test, 1/2); the p-value is the one-sided
   binomial tail ``P(X >= correct)``. A small test set gives a coarse test: with 10 test images an accuracy of
   0.9 has p ~ 0.011.

   **Split by patient** (``groups_a`` / ``groups_b``: the patient or CT of each image). Images of one patient or
   one CT are alike (a CT's DRRs share its anatomy); with a random split the classifier learns *which patients*
   are in a set, and DRRs of one CT are told from DRRs of another CT rendered the same way at accuracy 1.0. With
   groups, the test is cross-validated over folds of whole groups (scikit-learn ``StratifiedGroupKFold``, ``k`` =
   the smaller number of groups, at most 5): the classifier is always tested on patients and CTs it was not
   trained on, so it must have learnt the *domain*, not the people. Every image is predicted once; the accuracy
   and the binomial p-value are over all of them (approximate: the folds' classifiers share training data).

All measures take lists of float (H, W) images in [0, 1]; images of any size are made comparable by
:func:`prepare`: the central square (side = the shorter side) is cropped and resized by pixel-area averaging to
``size x size`` pixels (default 256). The grid is common in *pixels*, not millimetres: compare sets that show the
same field of view (a whole chest), which is what these sets are. None of these measures is an FID (no network
trained on natural images is involved) and none needs a download.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from dxr_core.errors import InputError, OptionError

__all__ = ["prepare", "radial_power_spectrum", "spectrum_distance", "histogram_distance", "image_features",
           "classifier_two_sample_test", "domain_gap", "domain_gap_folders", "format_domain_table", "REGIONS"]

REGIONS = ("dark", "middle", "bright")
QUANTILE_RULE = (30.0, 80.0)  # percent: dark < q30 <= middle < q80 <= bright


def prepare(image, size: int = 256) -> np.ndarray:
    """Central square crop (side = the shorter side), resized to ``size x size`` by pixel-area averaging (bilinear
    when enlarging); float32 [0, 1].

    Area averaging (``torch.nn.functional.interpolate(mode="area")``) is what a detector with larger pixels records
    and it is path-independent (256 -> 128 after 2000 -> 256 gives nearly the spectrum of 2000 -> 128: 0.02
    decades on real radiographs, where a gaussian-antialiased resize differed by 0.1). The high-frequency end of
    the spectrum depends on this choice: an LQ set made with another filter (e.g. antialiased bicubic) differs
    from area-averaged references there by construction.
    """
    import torch
    import torch.nn.functional as F

    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2 or min(img.shape) < 8:
        raise InputError(f"A radiograph for the domain measures must be 2-D and at least 8 px, got {img.shape}.")
    if not np.all(np.isfinite(img)):
        raise InputError("An image holds NaN/infinite values; give finite radiographs in [0, 1].")
    h, w = img.shape
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    if s != size:
        t = torch.from_numpy(np.ascontiguousarray(img))[None, None]
        if s > size:
            t = F.interpolate(t, size=(size, size), mode="area")
        else:
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
        img = t[0, 0].numpy()
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def central_crop(img: np.ndarray, fraction: float, min_side: int = 2) -> np.ndarray:
    """The central ``fraction`` of each side of a (H, W) image (at least ``min_side`` pixels a side)."""
    h, w = img.shape[-2:]
    ch, cw = min(h, max(min_side, round(h * fraction))), min(w, max(min_side, round(w * fraction)))
    return img[..., (h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]


def _central(img: np.ndarray, crop: float) -> np.ndarray:
    if not 0.1 <= crop <= 1.0:
        raise OptionError(f"crop {crop!r} must be the central fraction of the image side, between 0.1 and 1.")
    return central_crop(img, crop, min_side=8)


def radial_power_spectrum(image, crop: float = 0.75, bins: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in cycles/pixel, log10 radially averaged power) of one *prepared* image (see module doc)."""
    from scipy.signal.windows import hann

    reg = _central(np.asarray(image, np.float64), crop)
    reg = reg - reg.mean()
    sd = reg.std()
    reg = reg / sd if sd > 1e-8 else reg
    n = reg.shape[0]
    win = np.outer(hann(n, sym=False), hann(n, sym=False))
    p = np.abs(np.fft.fftshift(np.fft.fft2(reg * win))) ** 2 / (win ** 2).sum()
    f = np.fft.fftshift(np.fft.fftfreq(n))
    r = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    edges = np.linspace(1.0 / n, 0.5, int(bins) + 1)
    idx = np.digitize(r.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < bins)
    power = np.bincount(idx[ok], weights=p.ravel()[ok], minlength=bins)
    count = np.bincount(idx[ok], minlength=bins)
    power = power / np.maximum(count, 1)
    return (edges[:-1] + edges[1:]) / 2, np.log10(power + 1e-12)


def _set(images: Sequence, size: int, name: str) -> list[np.ndarray]:
    imgs = [prepare(im, size) for im in images]
    if not imgs:
        raise InputError(f"The {name} set is empty; give at least one radiograph (four for the classifier test).")
    return imgs


def spectrum_distance(set_a: Sequence, set_b: Sequence, size: int = 256, crop: float = 0.75, bins: int = 32,
                      prepared: bool = False) -> dict:
    """RAPSD distance (decades, RMS over frequency) between two sets, plus both mean log-spectra."""
    a = set_a if prepared else _set(set_a, size, "first")
    b = set_b if prepared else _set(set_b, size, "second")
    fa = np.array([radial_power_spectrum(x, crop, bins)[1] for x in a])
    fb = np.array([radial_power_spectrum(x, crop, bins)[1] for x in b])
    freq = radial_power_spectrum(a[0], crop, bins)[0]
    ma, mb = fa.mean(0), fb.mean(0)
    return {"distance": float(np.sqrt(np.mean((ma - mb) ** 2))), "frequency": freq.tolist(),
            "log10_power_a": ma.tolist(), "log10_power_b": mb.tolist(),
            "high_freq_difference": float(np.mean((mb - ma)[freq > 0.25]))}


def _regions(img: np.ndarray, labels: np.ndarray | None, crop: float) -> dict[str, np.ndarray]:
    reg = _central(img, crop)
    if labels is not None:
        lab = _central(np.asarray(labels), crop)
        return {name: reg[lab == k + 1] for k, name in enumerate(REGIONS)}
    lo, hi = np.percentile(reg, QUANTILE_RULE)
    return {"dark": reg[reg < lo], "middle": reg[(reg >= lo) & (reg < hi)], "bright": reg[reg >= hi]}


def _prepare_labels(labels, size: int) -> np.ndarray:
    from skimage.transform import resize

    lab = np.asarray(labels)
    h, w = lab.shape
    s = min(h, w)
    lab = lab[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return resize(lab, (size, size), order=0, preserve_range=True, anti_aliasing=False).astype(np.int64)


def histogram_distance(set_a: Sequence, set_b: Sequence, size: int = 256, crop: float = 0.8,
                       labels_a: Sequence | None = None, labels_b: Sequence | None = None,
                       prepared: bool = False) -> dict:
    """Regional Wasserstein-1 distances (intensity units) between the two sets; see the module docstring."""
    from scipy.stats import wasserstein_distance

    a = set_a if prepared else _set(set_a, size, "first")
    b = set_b if prepared else _set(set_b, size, "second")
    la = [_prepare_labels(x, size) for x in labels_a] if labels_a is not None else [None] * len(a)
    lb = [_prepare_labels(x, size) for x in labels_b] if labels_b is not None else [None] * len(b)
    if len(la) != len(a) or len(lb) != len(b):
        raise InputError("Give one label map per image (or none): the counts differ.")
    edges = np.linspace(0.0, 1.0, 257)
    centres = (edges[:-1] + edges[1:]) / 2

    def hist(imgs, labs):
        h = {r: np.zeros(256) for r in REGIONS}
        for im, lab in zip(imgs, labs):
            for r, v in _regions(im, lab, crop).items():
                h[r] += np.histogram(v, bins=edges)[0]
        return h

    ha, hb = hist(a, la), hist(b, lb)
    out: dict = {"regions": {}, "rule": "labels" if labels_a is not None else f"quantiles {QUANTILE_RULE}"}
    for r in REGIONS:
        if ha[r].sum() == 0 or hb[r].sum() == 0:
            raise InputError(f"Region {r!r} holds no pixels in one set; check the label maps (1 dark, 2 middle, "
                             "3 bright).")
        out["regions"][r] = {"wasserstein": float(wasserstein_distance(centres, centres, ha[r], hb[r])),
                             "mean_a": float((ha[r] * centres).sum() / ha[r].sum()),
                             "mean_b": float((hb[r] * centres).sum() / hb[r].sum())}
    out["distance"] = float(np.mean([out["regions"][r]["wasserstein"] for r in REGIONS]))
    return out


def image_features(image, crop: float = 0.75, bins: int = 16) -> np.ndarray:
    """Feature vector of one *prepared* image: log-RAPSD (``bins``), 11 intensity quantiles, 2 gradient means."""
    img = np.asarray(image, np.float32)
    spec = radial_power_spectrum(img, crop, bins)[1]
    reg = _central(img, crop)
    q = np.percentile(reg, np.linspace(5, 95, 11))
    g1 = np.mean(np.hypot(*np.gradient(reg)))
    half = reg[: reg.shape[0] // 2 * 2, : reg.shape[1] // 2 * 2].reshape(reg.shape[0] // 2, 2, reg.shape[1] // 2, 2)
    g2 = np.mean(np.hypot(*np.gradient(half.mean(axis=(1, 3)))))
    return np.concatenate([spec, q, [np.log10(g1 + 1e-8), np.log10(g2 + 1e-8)]]).astype(np.float64)


def classifier_two_sample_test(set_a: Sequence, set_b: Sequence, seed: int = 0, size: int = 256,
                               prepared: bool = False, features_a: np.ndarray | None = None,
                               features_b: np.ndarray | None = None, groups_a: Sequence | None = None,
                               groups_b: Sequence | None = None) -> dict:
    """C2ST (Lopez-Paz & Oquab 2017): held-out accuracy of a logistic regression telling the sets apart.

    ``groups_a`` / ``groups_b``: the patient (or CT) of each image; given, the test splits by whole groups
    (cross-validated, see the module docstring). Returns ``{"accuracy", "p_value", "n_train", "n_test",
    "correct", "split"}``.
    """
    from scipy.stats import binomtest

    if features_a is None:
        a = set_a if prepared else _set(set_a, size, "first")
        features_a = np.array([image_features(x) for x in a])
    if features_b is None:
        b = set_b if prepared else _set(set_b, size, "second")
        features_b = np.array([image_features(x) for x in b])
    fa, fb = np.asarray(features_a), np.asarray(features_b)
    n = min(len(fa), len(fb))
    if n < 4:
        raise InputError(f"The classifier two-sample test needs at least 4 images in each set, got {len(fa)} and "
                         f"{len(fb)}; give more images (dozens make a meaningful test).")
    if (groups_a is None) != (groups_b is None):
        raise InputError("Give the groups (patients / CTs) of both sets or of neither.")
    if groups_a is not None:
        return _c2st_by_group(fa, fb, list(groups_a), list(groups_b), seed)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xC25]))
    ia = rng.permutation(len(fa))[:n]
    # equal sizes: one permutation for both (a valid random split of each set; identical sets give exactly 0.5)
    ib = ia if len(fb) == len(fa) else rng.permutation(len(fb))[:n]
    h = n // 2
    x_tr = np.concatenate([fa[ia[:h]], fb[ib[:h]]])
    y_tr = np.r_[np.zeros(h), np.ones(h)]
    x_te = np.concatenate([fa[ia[h:]], fb[ib[h:]]])
    y_te = np.r_[np.zeros(n - h), np.ones(n - h)]
    clf = _classifier()
    clf.fit(x_tr, y_tr)
    correct = int((clf.predict(x_te) == y_te).sum())
    n_test = len(y_te)
    p = float(binomtest(correct, n_test, 0.5, alternative="greater").pvalue)
    return {"accuracy": correct / n_test, "p_value": p, "correct": correct, "n_test": n_test,
            "n_train": len(y_tr), "features": int(fa.shape[1]), "classifier": "logistic regression (L2, C=1)",
            "split": "random halves"}


def _classifier():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))


def _c2st_by_group(fa: np.ndarray, fb: np.ndarray, groups_a: list, groups_b: list, seed: int) -> dict:
    """C2ST cross-validated over folds of whole groups (see the module docstring)."""
    from scipy.stats import binomtest
    from sklearn.model_selection import StratifiedGroupKFold

    if len(groups_a) != len(fa) or len(groups_b) != len(fb):
        raise InputError(f"One group per image: {len(groups_a)} groups for {len(fa)} images and {len(groups_b)} "
                         f"for {len(fb)}.")
    k = min(5, len(set(groups_a)), len(set(groups_b)))
    if k < 2:
        raise InputError("The classifier two-sample test by patient needs at least 2 patients (or CTs) in each "
                         "set; give images of more patients, or no groups for a random split.")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xC25, 1]))
    n = min(len(fa), len(fb))  # balance the classes: a seeded subsample of the larger set
    ia, ib = np.sort(rng.permutation(len(fa))[:n]), np.sort(rng.permutation(len(fb))[:n])
    x = np.concatenate([fa[ia], fb[ib]])
    y = np.r_[np.zeros(n), np.ones(n)]
    # prefixes keep the two sets' group names apart ("p1" of one set is not "p1" of the other)
    g = np.array([f"a:{groups_a[i]}" for i in ia] + [f"b:{groups_b[i]}" for i in ib])
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(rng.integers(2 ** 31 - 1)))
    correct = 0
    for tr, te in folds.split(x, y, g):
        if len(set(y[tr])) < 2:  # a fold without one class cannot train a classifier; its images count as wrong
            continue
        correct += int((_classifier().fit(x[tr], y[tr]).predict(x[te]) == y[te]).sum())
    n_test = len(y)
    p = float(binomtest(correct, n_test, 0.5, alternative="greater").pvalue)
    return {"accuracy": correct / n_test, "p_value": p, "correct": correct, "n_test": n_test,
            "n_train": int(round(n_test * (k - 1) / k)), "features": int(fa.shape[1]),
            "classifier": "logistic regression (L2, C=1)", "split": f"by patient, {k} folds"}


def domain_gap(set_a: Sequence, set_b: Sequence, size: int = 256, seed: int = 0,
               labels_a: Sequence | None = None, labels_b: Sequence | None = None,
               groups_a: Sequence | None = None, groups_b: Sequence | None = None) -> dict:
    """All three measures between ``set_a`` (the reference, e.g. real radiographs) and ``set_b``; ``groups_*``:
    the patient / CT of each image, for the classifier test split by patient."""
    a, b = _set(set_a, size, "reference"), _set(set_b, size, "prediction")
    out = {"n_a": len(a), "n_b": len(b), "size": int(size),
           "spectrum": spectrum_distance(a, b, prepared=True),
           "histogram": histogram_distance(a, b, labels_a=labels_a, labels_b=labels_b, size=size, prepared=True)}
    if min(len(a), len(b)) >= 4:
        out["c2st"] = classifier_two_sample_test(a, b, seed=seed, prepared=True, groups_a=groups_a,
                                                 groups_b=groups_b)
    else:
        out["c2st"] = None
    return out


#: the CT of an image written by ``dxr dataset`` (``<CT>_<NNNN>.png``): its name less the image number
DATASET_CT_PATTERN = r"^(.+)_\d+$"


def groups_from_names(names: Sequence[str], pattern: str = DATASET_CT_PATTERN) -> list[str]:
    """The group (patient / CT) of each file name: the regex's first group, or its whole match, in the name
    without its extension."""
    import re

    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise OptionError(f"--domain-groups {pattern!r} is not a regular expression ({e}).") from None
    groups = []
    for name in names:
        m = rx.search(name.split(".")[0])
        if m is None:
            raise InputError(f"--domain-groups {pattern!r} does not match {name!r}; give a pattern that "
                             "finds the patient / CT in every file name, e.g. '^(.+)_\\d+$'.")
        groups.append(m.group(1) if rx.groups else m.group(0))
    return groups


def _read_set(folder: str | os.PathLike, size: int, limit: int | None, progress: bool,
              pattern: str | None = None) -> tuple[list[np.ndarray], list[str] | None]:
    """Images of a folder, each prepared at ``min(size, its shorter side)`` (squares of possibly different sizes),
    and with ``pattern`` the group (patient / CT) of each: the regex's first group, or its whole match, in the
    file name."""

    from dxr_core.data.radiographs import list_radiographs, load_radiograph

    files = list_radiographs(folder)
    if not files:
        raise InputError(f"No radiographs in {str(folder)!r}; give a folder of PNG/JPEG/DICOM/NRRD radiographs.")
    if limit is not None:
        files = files[: int(limit)]
    groups = None if pattern is None else groups_from_names([f.name for f in files], pattern)
    if progress:
        from tqdm.auto import tqdm

        files = tqdm(files, desc=f"read {Path(folder).name}", unit="image")
    out = []
    for f in files:
        img = load_radiograph(f)[0]
        out.append(prepare(img, min(int(size), min(img.shape))))
    return out, groups


def domain_gap_folders(ref_dir: str | os.PathLike, pred_dir: str | os.PathLike, size: int | None = None,
                       seed: int = 0, limit: int | None = None, progress: bool = False,
                       group_pattern: str | None = None) -> dict:
    """:func:`domain_gap` between all radiographs of two folders (sub-folders included). ``group_pattern``: a
    regex finding each image's patient / CT in its file name, for the classifier test split by patient.

    ``size`` None: the common grid is ``min(256, the shortest image side in both sets)``, so no set is compared
    after upsampling (an upsampled image has no power above its own Nyquist frequency, which the spectrum
    distance would report as a gap).
    """
    for d in (ref_dir, pred_dir):
        if not Path(d).is_dir():
            raise InputError(f"{str(d)!r} is not a folder; give two folders of radiographs.")
    cap = 256 if size is None else int(size)
    a, ga = _read_set(ref_dir, cap, limit, progress, group_pattern)
    b, gb = _read_set(pred_dir, cap, limit, progress, group_pattern)
    grid = min(x.shape[0] for x in a + b) if size is None else int(size)
    a, b = [prepare(x, grid) for x in a], [prepare(x, grid) for x in b]
    out = domain_gap(a, b, size=grid, seed=seed, groups_a=ga, groups_b=gb)
    out.update(ref=str(ref_dir), pred=str(pred_dir))
    return out


def format_domain_table(res: dict) -> str:
    """A short text report of :func:`domain_gap`."""
    s, h, c = res["spectrum"], res["histogram"], res.get("c2st")
    lines = [f"domain gap: {res['n_a']} reference vs {res['n_b']} images, common grid {res['size']} px",
             f"  power-spectrum distance (RMS log10)  {s['distance']:.4f}   high-freq (pred - ref) "
             f"{s['high_freq_difference']:+.3f} decades",
             f"  intensity histogram W1 (mean)       {h['distance']:.4f}   " +
             "  ".join(f"{r} {h['regions'][r]['wasserstein']:.4f}" for r in REGIONS)]
    if c is not None:
        lines.append(f"  classifier two-sample test accuracy {c['accuracy']:.3f}   p = {c['p_value']:.3g} "
                     f"({c['correct']}/{c['n_test']} held-out correct; 0.5 = indistinguishable; split "
                     f"{c.get('split', 'random halves')})")
    else:
        lines.append("  classifier two-sample test: skipped (fewer than 4 images in a set)")
    return "\n".join(lines)
