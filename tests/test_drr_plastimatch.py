"""Agreement with plastimatch drr (exact/Siddon) on the same attenuation volume.

plastimatch conventions found empirically (v1.9.4) and used here:
* ``--nrm n``: source = isocenter + SAD * n (PA: n = (0, 1, 0)); ``-o`` isocenter in the MHA's world (LPS) mm.
* ``-r "A B"`` / ``-z "A B"``: A = image width (columns, PFM width), B = height (rows); pixel centres at integers,
  the central ray hits ((A-1)/2, (B-1)/2) — the same centring as ours.
* Image axes: column u runs along vup x n, row v along -vup. With n = (0,1,0), vup = (0,0,1): u = -x (patient
  right), v = -z (feet); our PA has columns along +x, so plastimatch's image equals ours mirrored left-right.
* PFM rows are written top row first (row v = 0 first), not bottom-up as the PFM spec says.
* ``--hu-conversion none``: output = line integral of the voxel values with length in cm (ours: mm): a factor 10.
"""
import os
import shutil
import subprocess

import numpy as np
import pytest

from dxr_core.drr import make_geometry, project
from dxr_core.volume import Volume

pytestmark = pytest.mark.skipif(shutil.which("plastimatch") is None, reason="plastimatch is not on PATH")


def read_pfm(path):
    raw = open(path, "rb").read()
    parts = raw.split(b"\n", 3)
    w, h = map(int, parts[1].split())
    scale = float(parts[2])
    a = np.frombuffer(parts[3][: w * h * 4], dtype="<f4" if scale < 0 else ">f4").reshape(h, w)
    return a.astype(np.float64)


def run_plastimatch(tmp_path, vol, g, name):
    mha = str(tmp_path / f"{name}.mha")
    import SimpleITK as sitk

    sitk.WriteImage(vol.to_sitk(), mha)
    rows, cols = g.size
    sr, sc = g.pixel_spacing_mm
    cmd = ["plastimatch", "drr", "-i", "exact", "--hu-conversion", "none", "-t", "pfm",
           "-r", f"{cols} {rows}", "-z", f"{cols * sc} {rows * sr}", "--sad", str(g.sad_mm), "--sid", str(g.sid_mm),
           "-o", " ".join(f"{c:.6f}" for c in g.isocenter_lps), "--nrm", "0 1 0", "--vup", "0 0 1",
           "-O", str(tmp_path / f"{name}_"), mha]
    subprocess.run(cmd, check=True, capture_output=True)
    pfm = [f for f in os.listdir(tmp_path) if f.startswith(f"{name}_") and f.endswith(".pfm")][0]
    return read_pfm(str(tmp_path / pfm))[:, ::-1] * 10.0  # mirror to our PA column order; cm -> mm


def test_plastimatch_agreement(tmp_path):
    rng = np.random.default_rng(0)
    z, y, x = 40, 56, 64
    zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    a = np.where(((xx - 31) / 26.0) ** 2 + ((yy - 27) / 20.0) ** 2 + ((zz - 20) / 17.0) ** 2 < 1, 0.02, 0.0)
    a += np.where(((xx - 20) / 6.0) ** 2 + ((yy - 35) / 6.0) ** 2 < 1, 0.03, 0.0) * (zz > 5)
    a += rng.random(a.shape) * 0.002
    # CT-like (band-limited) edges: Siddon (piecewise-constant voxels) and Joseph (bilinear) differ most on
    # perfectly sharp binary edges, which a reconstructed CT never has
    from scipy.ndimage import gaussian_filter

    a = gaussian_filter(a, 1.0)
    v = Volume(a.astype(np.float32), (1.1, 0.9, 1.6), (-30.0, -20.0, 15.0))
    g = make_geometry(v, "pa", size=(60, 76), pixel_spacing_mm=1.5, isocenter_lps=v.center_lps + [2.0, -3.0, 1.5])
    ours = project(v, g).astype(np.float64)
    theirs = run_plastimatch(tmp_path, v, g, "ct")
    m = (ours > 0) | (theirs > 0)
    o, t = ours[m] - ours[m].mean(), theirs[m] - theirs[m].mean()
    ncc = float((o * t).sum() / np.sqrt((o * o).sum() * (t * t).sum()))
    print(f"NCC ours vs plastimatch exact: {ncc:.5f}; mean ratio {theirs[m].sum() / ours[m].sum():.4f}")
    assert ncc >= 0.999

    # a single-voxel bead: centroid of the projection in both images, and our projection matrix
    b = np.zeros_like(a, dtype=np.float32)
    bk, bj, bi = 29, 12, 47
    b[bk, bj, bi] = 1.0
    vb = v.with_array(b)
    ob = project(vb, g).astype(np.float64)
    tb = run_plastimatch(tmp_path, vb, g, "bead")

    def centroid(img):
        r0, c0 = np.unravel_index(np.argmax(img), img.shape)
        win = img[max(r0 - 3, 0):r0 + 4, max(c0 - 3, 0):c0 + 4]
        rr, cc = np.meshgrid(np.arange(max(r0 - 3, 0), max(r0 - 3, 0) + win.shape[0]),
                             np.arange(max(c0 - 3, 0), max(c0 - 3, 0) + win.shape[1]), indexing="ij")
        return np.array([(cc * win).sum() / win.sum(), (rr * win).sum() / win.sum()])

    co, ct = centroid(ob), centroid(tb)
    cp = g.project_points(v.index_to_world(np.array([[bi, bj, bk]], float)))[0]
    print(f"bead (col,row): ours {co}, plastimatch {ct}, projection_matrix {cp}")
    assert np.abs(co - ct).max() <= 0.5
    assert np.abs(co - cp).max() <= 0.5
