"""Seeded analytic chest anatomy, built from primitives painted in order (later layers cover earlier ones).

World frame: DICOM patient LPS in mm, patient supine; +x = patient left, +y = posterior, +z = superior. The
origin is on the midline at the level of the carina.

HU values (non-contrast CT, 120 kVp) are mid-range literature values:
- air -1000, water 0 (definition of the scale; Hounsfield, Br J Radiol 46:1016, 1973);
- inflated lung -800 ... -880 depending on inspiration (mean lung density of healthy adults about -850 HU at
  full inspiration; Kalender, *Computed Tomography*, 3rd ed., 2011, Fig. 1.3; Gevenois et al., AJR 1996);
- fat -100 (Hofer, *CT Teaching Manual*, 4th ed., 2010: fat -100 +/- 20 (-80..-120));
- skin +30, muscle +50 (Hofer: muscle 45 +/- 5), liver +60 (Hofer: 65 +/- 5), spleen +45 (Hofer: 45 +/- 5),
  unenhanced blood +40 (Hofer: blood 55 +/- 5 ... plasma 27; we take the lower value of flowing blood),
  intervertebral disc +90, costal cartilage +120 (non-calcified hyaline cartilage 80..150);
- cancellous (trabecular) bone +230 (normal adult vertebral trabecular bone 150..250 HU; Schreiber et al.,
  J Bone Joint Surg Am 93:1057, 2011); cortical bone +1100 (cortical bone > +1000 HU; Kalender 2011);
- breast: mixed glandular/adipose -40 (fatty breast -100, dense glandular +40).

Seeds vary: body width/depth/height, fat and muscle thickness, inspiration level (dome height, lung density,
rib slope), rib spacing, vessel branching (angles, radii, lengths), heart size/position, breast.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dxr_core.phantom.primitives import (
    Ellipsoid,
    Layer,
    Primitive,
    SuperEllipsoid,
    Tube,
    Union,
    rotation,
)

HU = {
    "air": -1000.0,
    "fat": -100.0,
    "skin": 30.0,
    "muscle": 50.0,
    "soft": 25.0,  # mediastinal / abdominal soft-tissue mixture
    "liver": 60.0,
    "spleen": 45.0,
    "blood": 40.0,
    "bronchial_wall": 30.0,
    "disc": 90.0,
    "cartilage": 120.0,
    "cancellous": 230.0,
    "cortical": 1100.0,
    "breast": -40.0,
}


@dataclass
class ChestModel:
    layers: list[Layer]
    fov_lo: np.ndarray  # default field of view (LPS mm, x y z)
    fov_hi: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    lungs: list[Primitive] = field(default_factory=list)


def _shell(name: str, outer: Primitive, inner: Primitive, outer_hu: float, inner_hu: float) -> list[Layer]:
    return [Layer(name + "_cortex", outer, outer_hu), Layer(name + "_marrow", inner, inner_hu)]


def _shrink(se: SuperEllipsoid, t: float) -> SuperEllipsoid:
    return SuperEllipsoid(se.center, np.maximum(se.radii - t, 0.3), se.rot, se.e_xy, se.e_z)


def _perp(d: np.ndarray) -> np.ndarray:
    a = np.cross(d, [0.0, 0.0, 1.0])
    if np.linalg.norm(a) < 1e-3:
        a = np.cross(d, [1.0, 0.0, 0.0])
    return a / np.linalg.norm(a)


def _rotate_about(v: np.ndarray, axis: np.ndarray, ang: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    return v * np.cos(ang) + np.cross(axis, v) * np.sin(ang) + axis * (axis @ v) * (1 - np.cos(ang))


def _vessel_tree(rng, starts, inside, min_radius: float, max_depth: int, outward_center):
    """Branching, tapering tree: list of (a, b, ra, rb, depth) segments.

    ``starts``: list of (point, direction, radius, length). Each segment ends in two children (Murray-like radius
    split r1 ~ 0.8 r, r2 ~ 0.65 r, branching angles 15-55 deg, lengths ~ 7 radii), directions pulled away from
    ``outward_center`` (the hilum). Growth stops at ``min_radius`` or where the end point leaves ``inside``.
    """
    segs = []
    stack = [(np.asarray(p, float), np.asarray(d, float) / np.linalg.norm(d), r, L, 0) for p, d, r, L in starts]
    while stack:
        p, d, r, L, depth = stack.pop()
        r_end = r * 0.96
        b = p + d * L
        margin = min(r_end, 2.0) + 0.5
        ok = depth == 0 or inside(b[None], margin)[0]  # lobar trunks leave the mediastinum
        for _ in range(4 if not ok else 0):  # try other directions (a vessel bends away from the pleura)
            nd = d + rng.normal(0, 0.6, 3)
            nd /= np.linalg.norm(nd)
            if inside((p + nd * L)[None], margin)[0]:
                d, b, ok = nd, p + nd * L, True
                break
        if not ok:  # shorten to stay inside the lung
            for f in (0.66, 0.4):
                b = p + d * L * f
                if inside(b[None], margin)[0]:
                    ok = True
                    break
            if not ok:
                continue
            segs.append((p, b, r, r_end, depth))
            continue
        segs.append((p, b, r, r_end, depth))
        if r_end * 0.8 < min_radius or depth >= max_depth:
            continue
        out = b - outward_center
        out = out / (np.linalg.norm(out) + 1e-9)
        axis = _rotate_about(_perp(d), d, rng.uniform(0, 2 * np.pi))
        for k, (fr, ang) in enumerate(
            ((rng.uniform(0.84, 0.93), rng.uniform(10, 25)), (rng.uniform(0.55, 0.78), -rng.uniform(30, 60)))
        ):
            nd = _rotate_about(d, axis, np.deg2rad(ang))
            nd = nd + 0.2 * out
            nd /= np.linalg.norm(nd)
            rc = r_end * fr
            stack.append((b, nd, rc, float(np.clip(rc * rng.uniform(3.5, 6.0), 3.0, 22.0)), depth + 1))
    return segs


@functools.lru_cache(maxsize=4)
def build_chest(seed: int = 0, breast: bool = False) -> ChestModel:
    """The seeded anatomy (cached: treat the returned model as read-only)."""
    return _build_chest(int(seed), bool(breast))


def _build_chest(seed: int, breast: bool) -> ChestModel:
    rng = np.random.default_rng(seed)
    sw = rng.uniform(0.92, 1.08)  # width scale
    sd = rng.uniform(0.92, 1.08)  # depth scale
    sh = rng.uniform(0.93, 1.07)  # height scale
    insp = rng.uniform(0.0, 1.0)  # inspiration level 0 (shallow) .. 1 (deep)
    fat_t = rng.uniform(7.0, 20.0)
    mus_t = rng.uniform(10.0, 18.0)
    layers: list[Layer] = []

    # ---- body outline: skin, subcutaneous fat, muscle, inner soft tissue -----------------------------------
    z_t1 = 128.0 * sh  # top of the first thoracic vertebra
    trunk_c = np.array([0.0, 8.0, -120.0 * sh])
    trunk_r = np.array([165.0 * sw, 122.0 * sd, z_t1 + 30.0 + 120.0 * sh])
    trunk = SuperEllipsoid(trunk_c, trunk_r, e_xy=0.55, e_z=0.35)
    neck_top = z_t1 + 170.0
    neck = Tube([[0, 22, z_t1 - 20], [0, 25, neck_top]], 56.0 * sw)
    shoulders = [SuperEllipsoid([s * 128.0 * sw, 18.0, z_t1 - 12.0], [64.0 * sw, 72.0 * sd, 52.0], e_xy=0.8, e_z=0.9)
                 for s in (-1, 1)]
    if breast:
        for s in (-1, 1):
            b = Ellipsoid([s * 92 * sw, -trunk_r[1] + 8 - 18, (-85.0 - 25.0 * insp) * sh],
                          [60 * sw, 44, 56 * sh], rotation(s * 20))
            layers += [Layer("breast_skin", b, HU["skin"]), Layer("breast", Ellipsoid(b.center, b.radii - 2, b.rot),
                                                                    HU["breast"])]

    def body(t: float) -> Union:
        return Union([_shrink(trunk, t)] + [_shrink(sq, t) for sq in shoulders] + [neck.shrunk(t)])

    layers += [Layer("skin", body(0.0), HU["skin"]), Layer("fat", body(2.0), HU["fat"]),
               Layer("muscle", body(2.0 + fat_t), HU["muscle"])]
    inner = _shrink(trunk, 2.0 + fat_t + mus_t)
    layers.append(Layer("inner", inner, HU["soft"]))
    in_x, in_y = inner.radii[0], inner.radii[1]

    # ---- levels -------------------------------------------------------------------------------------------
    hv = rng.uniform(22.5, 26.0) * sh  # vertebral level height (rib spacing)
    dome_r = (-70.0 - 40.0 * insp) * sh  # right dome apex z
    dome_l = dome_r - rng.uniform(8, 22)

    # ---- abdomen below the diaphragm (liver right, spleen/stomach left) --------------------------------------
    layers.append(Layer("liver_low", Ellipsoid([-45 * sw, 0, dome_r - 150], [115 * sw, 95 * sd, 120]), HU["liver"]))

    # ---- lungs --------------------------------------------------------------------------------------------
    lung_hu = -800.0 - 80.0 * insp
    apex = z_t1 + rng.uniform(2, 14)
    lungs = []
    for s in (-1, 1):
        rx = (in_x - 24.0) / 2.0
        cx = s * (in_x - rx - 3.0)
        ry = in_y - 4.0
        rz = (apex - (dome_r - 60.0)) / 2.0
        lung = SuperEllipsoid([cx, 4.0, apex - rz], [rx, ry, rz], e_xy=0.62, e_z=0.72)
        lungs.append(lung)
        layers.append(Layer("lung_right" if s < 0 else "lung_left", lung, lung_hu))

    # domes (the diaphragm with the liver under the right one, spleen/stomach under the left one)
    dome_rz = 95.0
    domes = []
    for s, apex_z, hu in ((-1, dome_r, HU["liver"]), (1, dome_l, HU["spleen"])):
        d = Ellipsoid([s * abs(lungs[0].center[0]) * 0.92, 12.0, apex_z - dome_rz],
                      [lungs[0].radii[0] * 1.28, in_y * 1.18, dome_rz])
        domes.append(d)
    heart_c = np.array([rng.uniform(8, 18) * sw, -28.0 * sd, dome_r + rng.uniform(38, 48)])
    heart_r = np.array([rng.uniform(58, 68) * sw, 50.0 * sd, 52.0])
    heart_rot = rotation(-25.0, rng.uniform(15, 25), 0.0)
    heart = Ellipsoid(heart_c, heart_r, heart_rot)
    peri = Ellipsoid(heart_c, heart_r + 5.0, heart_rot)

    def in_lung(pts, margin):
        pts = np.asarray(pts, float)
        ok = np.zeros(len(pts), bool)
        for lung in lungs:
            ok |= lung._sdf(pts) < -margin
        for d in domes:
            ok &= d._sdf(pts) > margin
        return ok & (peri._sdf(pts) > margin)

    # ---- airways and vessels --------------------------------------------------------------------------------
    carina = np.array([-2.0, 10.0, 0.0])
    hila = {-1: np.array([-58.0 * sw, 8.0, -12.0]), 1: np.array([58.0 * sw, 12.0, -4.0])}
    art_starts, vein_starts = [], []
    for s in (-1, 1):
        h = hila[s]
        lobes = [((s * 0.6, 0.1, 1.0), 4.5), ((s * 0.5, -0.8, 0.6), 3.5), ((s * 1.0, -0.5, -0.35), 4.0),
                 ((s * 0.9, 0.8, -0.2), 3.5), ((s * 0.5, 0.45, -1.0), 5.0), ((s * 0.8, -0.2, -1.0), 4.0)]
        for d, r in lobes:
            d = np.asarray(d) + rng.normal(0, 0.12, 3)
            art_starts.append((h, d, 1.4 * r * rng.uniform(0.9, 1.1), 26.0))
        hv_ = h + np.array([s * 5.0, -8.0, -22.0])
        for d, r in (((s * 0.8, -0.1, 0.6), 4.5), ((s * 0.9, -0.4, -0.2), 3.5), ((s * 0.7, 0.3, -0.8), 5.0),
                     ((s * 0.8, 0.6, -0.3), 3.5)):
            d = np.asarray(d) + rng.normal(0, 0.15, 3)
            vein_starts.append((hv_, d, 1.3 * r * rng.uniform(0.9, 1.1), 22.0))
    art = []
    for st in art_starts:
        art += _vessel_tree(rng, [st], in_lung, 0.65, 12, hila[int(np.sign(st[0][0]))])
    veins = []
    for st in vein_starts:
        veins += _vessel_tree(rng, [st], in_lung, 0.65, 12, hila[int(np.sign(st[0][0]))])
    vessels = Union(Tube([a, b], [ra, rb]) for a, b, ra, rb, _ in art + veins)
    # bronchi run beside the first generations of the arteries
    br_wall, br_lumen = [], []
    for a, b, ra, rb, depth in art:
        if depth <= 3 and rb >= 1.6:
            dvec = (b - a) / (np.linalg.norm(b - a) + 1e-9)
            off = _perp(dvec) * (ra + ra * 0.9 + 0.8)
            wr = (ra * 0.9, rb * 0.9)
            br_wall.append(Tube([a + off, b + off], wr))
            br_lumen.append(Tube([a + off, b + off], [wr[0] * 0.7, wr[1] * 0.7]))
    layers.append(Layer("pulmonary_vessels", vessels, HU["blood"]))
    layers.append(Layer("bronchial_wall", Union(br_wall), HU["bronchial_wall"]))
    layers.append(Layer("bronchial_lumen", Union(br_lumen), HU["air"]))

    # diaphragm domes over the lung bases
    layers.append(Layer("dome_right_liver", domes[0], HU["liver"]))
    layers.append(Layer("dome_left_spleen", domes[1], HU["spleen"]))
    gas = Ellipsoid([domes[1].center[0] * 0.8, -10.0, dome_l - 12 - 11], [24 * sw, 22, 11])
    layers.append(Layer("stomach_wall", Ellipsoid(gas.center, gas.radii + 3, None), HU["muscle"]))
    layers.append(Layer("stomach_gas", gas, HU["air"]))

    # ---- heart, mediastinum, great vessels, trachea --------------------------------------------------------
    layers.append(Layer("pericardial_fat", peri, HU["fat"]))
    layers.append(Layer("heart", heart, HU["blood"]))
    aorta = Tube.from_spline(
        [[6, -18, heart_c[2] + 25], [4, -14, 15], [6, -4, 42], [16, 18, 52], [24, 36, 32], [22, 40, -40],
         [16, 34, -140], [10, 28, -260]],
        [13.5, 14, 13, 12.5, 12, 11.5, 11, 10.5], n=40)
    layers.append(Layer("aorta", aorta, HU["blood"]))
    layers.append(Layer("svc", Tube([[-26, -6, 70], [-24, -8, heart_c[2] + 30]], 10.0), HU["blood"]))
    pa = Union([
        Tube.from_spline([[12, -30, heart_c[2] + 30], [18, -18, -5], [24, -6, 8]], [13, 13, 12], n=10),
        Tube.from_spline([[24, -6, 8], [42, 6, 4], hila[1]], [11, 10, 7], n=10),
        Tube.from_spline([[20, -6, 6], [-20, 0, -2], hila[-1]], [10, 9, 7], n=10),
    ])
    layers.append(Layer("pulmonary_arteries", pa, HU["blood"]))
    trachea = Tube([[-1, 18, neck_top], [-1, 14, 90], carina], 10.0)
    bronchi = [Tube([carina, [-32, 10, -22], hila[-1] * 0.9 + np.array([0, 0, -8])], [8.0, 7.0, 5.5]),
               Tube([carina, [38, 12, -24], hila[1] * 0.9 + np.array([0, 0, -12])], [7.5, 6.5, 5.0])]
    layers.append(Layer("trachea_wall", Union([Tube(trachea.points, trachea.radii + 2.0)]
                                              + [Tube(b.points, b.radii + 1.5) for b in bronchi]), HU["cartilage"]))
    layers.append(Layer("trachea_lumen", Union([trachea] + bronchi), HU["air"]))

    # ---- spine --------------------------------------------------------------------------------------------
    y_body = 52.0 * sd
    n_levels = int((z_t1 + 3 * hv - (-330.0)) // hv) + 1
    spine_cortex, spine_marrow, discs, arches = [], [], [], []
    rib_heads = []
    for k in range(n_levels):
        lvl = k - 3  # -3..-1 cervical (C5-C7), 0 = T1
        zc = z_t1 - lvl * hv
        g = np.clip(lvl, -3, 16)
        rx, ry, rz = 13.0 + 0.75 * g, 11.5 + 0.55 * g, (hv - 5.0) / 2.0
        body = SuperEllipsoid([0, y_body, zc], [rx, ry, rz], e_xy=0.9, e_z=0.3)
        spine_cortex.append(body)
        spine_marrow.append(_shrink(body, 1.3))
        discs.append(SuperEllipsoid([0, y_body, zc - hv / 2.0], [rx - 1, ry - 1, 2.6], e_xy=0.9, e_z=0.4))
        yc = y_body + ry + 8.0  # spinal canal centre
        arch = Tube.from_spline([[-9, y_body + ry - 2, zc], [-11, yc + 2, zc], [0, yc + 11, zc - 2],
                                 [11, yc + 2, zc], [9, y_body + ry - 2, zc]], 4.0, n=12)
        spinous = Tube([[0, yc + 10, zc - 2], [0, yc + 34, zc - 20]], [4.5, 3.0])
        tp = Union([Tube([[s * 9, yc, zc + 1], [s * (28 + 0.6 * max(g, 0)), yc + 6, zc + 3]], [4.2, 3.6])
                    for s in (-1, 1)])
        arches += [arch, spinous, tp]
        if 0 <= lvl < 12:
            rib_heads.append((lvl, zc, rx, yc))
    # thin vertebral cortex (~0.5 mm) appears as a 1.3 mm shell of partial-volume density
    layers += _shell("vertebral_body", Union(spine_cortex), Union(spine_marrow), 600.0, HU["cancellous"])
    layers.append(Layer("disc", Union(discs), HU["disc"]))
    layers.append(Layer("vertebral_arch", Union(arches), 450.0))

    # ---- sternum ------------------------------------------------------------------------------------------
    y_st = -in_y - 2.0
    z_man = z_t1 - 1.6 * hv
    manubrium = SuperEllipsoid([0, y_st, z_man], [24, 7, 0.9 * hv], e_xy=0.7, e_z=0.6)
    st_body = SuperEllipsoid([0, y_st + 2, z_man - 3.4 * hv], [15, 6.5, 2.4 * hv], e_xy=0.7, e_z=0.6)
    layers += _shell("sternum", Union([manubrium, st_body]), Union([_shrink(manubrium, 1.0), _shrink(st_body, 1.0)]),
                     HU["cortical"] * 0.8, HU["cancellous"])

    # ---- ribs with costal cartilage -------------------------------------------------------------------------
    a_prof = [0.52, 0.74, 0.86, 0.93, 0.97, 1.0, 1.0, 1.0, 0.99, 0.97, 0.93, 0.88]
    b_prof = [0.55, 0.72, 0.82, 0.9, 0.95, 0.98, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    end_prof = [0.80, 0.80, 0.80, 0.80, 0.80, 0.80, 0.78, 0.74, 0.70, 0.66, 0.48, 0.36]
    rib_cortex, rib_marrow, rib_ant, rib_ant_marrow, cartilage = [], [], [], [], []
    drop_base = (105.0 - 40.0 * insp) * sh
    for lvl, zc, rx, yc in rib_heads:
        a = (in_x + 3.0) * a_prof[lvl] * rng.uniform(0.97, 1.03)
        b = (in_y + 2.0) * b_prof[lvl]
        cy = 6.0
        th1 = np.pi * end_prof[lvl]
        drop = drop_base * (0.45 + 0.55 * min(1.0, lvl / 4.0)) * rng.uniform(0.92, 1.08)
        r_out = 3.6 + 0.25 * min(lvl, 6)
        for s in (-1, 1):
            th = np.linspace(0.30, th1, 16)
            xs = s * a * np.sin(th)
            ys = cy + b * np.cos(th)
            zs = zc + 4.0 + 6.0 * np.sin(np.minimum(th, 1.2) * 1.3) - drop * (th / np.pi) ** 1.7
            head = np.array([[s * (rx + 2.0), y_body + 4.0, zc + 2.0], [s * 26.0, yc + 4.0, zc + 5.0]])
            pts = np.vstack([head, np.stack([xs, ys, zs], -1)])
            radii = r_out * np.concatenate([[0.8, 1.0], np.interp(th, [0.3, 1.6, th1], [1.0, 1.0, 0.72])])
            # anterior ends (beyond ~105 deg) are thinner-walled: a separate, less dense cortex
            cut = 2 + int(np.searchsorted(th, np.deg2rad(105.0)))
            post = Tube(pts[: cut + 1], radii[: cut + 1])
            rib_cortex.append(post)
            rib_marrow.append(post.shrunk(1.2))
            if cut < len(pts) - 1:
                ant = Tube(pts[cut:], radii[cut:])
                rib_ant.append(ant)
                rib_ant_marrow.append(ant.shrunk(0.9))
            if lvl < 10:  # costal cartilage to the sternum (ribs 8-10 join the cartilage above)
                end = pts[-1]
                zt = min(zc - drop + 12.0, z_man + 0.6 * hv - lvl * 0.9 * hv) if lvl < 7 else end[2] + 10.0
                tgt = np.array([s * (16.0 if lvl < 7 else 60.0 - 4 * (lvl - 7)), y_st + (2.0 if lvl < 7 else -4.0), zt])
                mid = 0.5 * (end + tgt) + np.array([0, -6.0, 0])
                cartilage.append(Tube.from_spline([end, mid, tgt], [r_out, r_out * 0.95, r_out * 0.85], n=8))
    layers.append(Layer("costal_cartilage", Union(cartilage), HU["cartilage"]))
    layers += _shell("rib", Union(rib_cortex), Union(rib_marrow), HU["cortical"], HU["cancellous"])
    layers += _shell("rib_anterior", Union(rib_ant), Union(rib_ant_marrow),
                     0.7 * HU["cortical"], 0.8 * HU["cancellous"])

    # ---- shoulder girdle: clavicles, scapulae, humeral heads ------------------------------------------------
    clav_c, clav_m, scap_c, scap_m = [], [], [], []
    for s in (-1, 1):
        cp = np.array([[s * 20, y_st - 4, z_man + 6], [s * 55, y_st - 10, z_man + 12], [s * 100, y_st + 18, z_t1 - 2],
                       [s * (in_x - 5), -15, z_t1 + 6], [s * (in_x + 12), 28, z_t1 + 6]], float)
        cp[:, 0] *= rng.uniform(0.96, 1.04)
        clav = Tube.from_spline(cp, [10.0, 8.5, 7.5, 7.5, 8.5], n=24)
        clav_c.append(clav)
        clav_m.append(clav.shrunk(1.6))
        sc = SuperEllipsoid([s * (in_x * 0.72), in_y + mus_t * 0.35, z_t1 - 62 * sh], [50, 4.5, 72 * sh],
                            rotation(s * -28.0, 0.0, 0.0), e_xy=0.6, e_z=0.8)
        spine_s = Tube([[s * (in_x * 0.45), in_y + mus_t * 0.5, z_t1 - 25], [s * (in_x + 8), 35, z_t1 + 3]], 5.0)
        glen = Ellipsoid([s * (in_x + 14), 30, z_t1 - 12], [12, 16, 20])
        head = Ellipsoid([s * (in_x + 32), 28, z_t1 - 14], [24, 24, 25])
        scap_c += [sc, spine_s, glen, head]
        scap_m += [_shrink(sc, 1.5), spine_s.shrunk(1.4), _shrink(glen, 1.6), _shrink(head, 1.6)]
    layers += _shell("clavicle", Union(clav_c), Union(clav_m), HU["cortical"], HU["cancellous"])
    layers += _shell("scapula", Union(scap_c), Union(scap_m), HU["cortical"], HU["cancellous"])

    fov_lo = np.array([-trunk_r[0] - 8.0, trunk_c[1] - trunk_r[1] - (42.0 if breast else 8.0), dome_r - 95.0])
    fov_hi = np.array([trunk_r[0] + 8.0, trunk_c[1] + trunk_r[1] + 8.0, apex + 60.0])
    params = dict(seed=seed, width_scale=sw, depth_scale=sd, height_scale=sh, inspiration=insp, fat_mm=fat_t,
                  muscle_mm=mus_t, level_height_mm=hv, dome_right_z=dome_r, dome_left_z=dome_l, lung_hu=lung_hu,
                  n_vessel_segments=len(art) + len(veins), breast=breast)
    return ChestModel(layers=layers, fov_lo=fov_lo, fov_hi=fov_hi, params=params, lungs=lungs)
