"""``dxr dataset``: a folder of CTs -> a labelled (enhanced) nodule-detection dataset, in shards, resumable.

Layout of ``OUT``::

    images/<id>.png (.dcm)     the radiographs (enhanced when ``enhance``; 16-bit PNG / DICOM DX)
    records/<id>.json          one record per image: every parameter drawn, labels on the image's grid, the
                               projection matrix of that grid, the LQ DRR's, timings; written last (resume key)
    failures/<ct>.json         CTs that could not be used, with the reason (the run goes on)
    train.json val.json test.json   COCO files, split by patient (CT): written by :func:`merge`
    manifest.csv               one row per image with every parameter
    README.md, card_*.png      the dataset card: counts, nodule size/kind/visibility histograms, a montage

Work is a list of jobs (CT, image index) in a fixed order; shard ``rank`` of ``world`` does jobs
``rank, rank + world, ...``, so shards started as ``torchrun`` processes or SLURM array tasks need no
communication, and :func:`merge` of their records equals a single-process run. Every draw is seeded by
(``seed``, CT name, image index).
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

import numpy as np

from dxr_core.dataset.config import DatasetConfig
from dxr_core.errors import DXRError, InputError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Job:
    ct: Path
    ct_name: str
    index: int
    split: str

    @property
    def image_id(self) -> str:
        return f"{self.ct_name}_{self.index:04d}"


def shard_from_env(env: dict | None = None) -> tuple[int, int]:
    """(rank, world size) from torchrun (``RANK``/``WORLD_SIZE``) or a SLURM array
    (``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``); (0, 1) when neither is set."""
    env = dict(os.environ if env is None else env)
    for r, w in (("RANK", "WORLD_SIZE"), ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")):
        if env.get(w):
            rank, world = int(env.get(r, 0)), int(env[w])
            if r.startswith("SLURM") and env.get("SLURM_ARRAY_TASK_MIN"):
                rank -= int(env["SLURM_ARRAY_TASK_MIN"])
            if not 0 <= rank < world:
                raise InputError(f"Shard {rank} of {world} ({r}/{w}) is out of range.")
            return rank, world
    return 0, 1


def _seed(*parts: Any) -> int:
    return int(np.random.SeedSequence([zlib.crc32(str(p).encode()) for p in parts]).generate_state(1)[0])


def ct_names(root: Path, cts: list[Path]) -> list[str]:
    names = []
    for ct in cts:
        rel = ct.relative_to(root)
        name = str(rel).replace(os.sep, "_")
        for suf in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
            if name.endswith(suf):
                name = name[: -len(suf)]
        names.append("".join(c if c.isalnum() or c in "-_." else "_" for c in name))
    return names


def patient_splits(names: list[str], shares, seed: int) -> dict[str, str]:
    """Each CT (patient) to one split: a seeded shuffle cut by the shares (train gets at least one)."""
    order = sorted(names, key=lambda n: _seed(seed, "split", n))
    n = len(order)
    n_val = int(round(shares[1] * n))
    n_test = int(round(shares[2] * n))
    n_train = max(1 if n else 0, n - n_val - n_test)
    n_val = min(n_val, n - n_train)
    out = {}
    for i, name in enumerate(order):
        out[name] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return out


def plan(ct_dir: str | Path, cfg: DatasetConfig, exclude: Iterable[Path] = ()) -> list[Job]:
    from dxr_core.io import find_ct_inputs

    root = Path(ct_dir).expanduser()
    cts = find_ct_inputs(root, exclude=list(exclude))
    if not cts:
        raise InputError(f"No CT found under {str(root)!r} (DICOM series folders, .nii/.nii.gz/.nrrd/.mha files).")
    names = ct_names(root, cts)
    splits = patient_splits(names, cfg.split, cfg.seed)
    return [Job(ct, name, i, splits[name]) for ct, name in zip(cts, names) for i in range(cfg.images_per_ct)]


def draw(job: Job, cfg: DatasetConfig) -> dict[str, Any]:
    """The parameters of one image (a pure function of the config, the CT name and the index)."""
    rng = np.random.default_rng(_seed(cfg.seed, job.ct_name, job.index))
    with_nodules = rng.random() >= cfg.nodule_free
    n = int(rng.integers(cfg.nodules[0], cfg.nodules[1] + 1)) if with_nodules else 0
    return {
        "preset": cfg.preset if cfg.preset != "none" else None,
        "view": str(cfg.views[int(rng.integers(len(cfg.views)))]),
        "rotation": float(rng.uniform(*cfg.rotation_deg)),
        "kvp": float(rng.uniform(*cfg.kvp)),
        "dose": float(rng.uniform(*cfg.dose)),
        "size": cfg.size,
        "seed": int(rng.integers(0, 2**31 - 1)),
        "nodules": n,
        "nodule_type": list(cfg.nodule_kinds) or None,
        "nodule_size": list(cfg.nodule_size_mm),
    }


def _write_image(img: np.ndarray, spacing, path: Path, meta=None, description: str | None = None) -> None:
    from dxr_core.io.radiograph import write_radiograph

    write_radiograph(img, spacing, path, template_meta=meta, description=description)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build(ct_dir: str | Path, out: str | Path, cfg: DatasetConfig, rank: int = 0, world: int = 1,
          progress: bool = True) -> dict[str, Any]:
    """Make this shard's images; returns counts and the share of time in each stage. Finished images are skipped."""
    from tqdm.auto import tqdm

    from dxr_core.io.atomic import remove_stale_temporaries, write_text_atomic
    from dxr_core.io.ct import read_ct
    from dxr_core.io.radiograph import jsonable
    from dxr_core.params import DRRParams
    from dxr_core.pipeline import cleaned_ct, enhance_drr, render

    out = Path(out).expanduser()
    for sub in ("images", "records", "failures"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
    jobs = plan(ct_dir, cfg, exclude=[out])[rank::world]
    enhancer = None
    if cfg.enhance:
        from dxr_core.diffusion.enhancer import load_enhancer

        enhancer = load_enhancer(None if cfg.model == "shipped" else cfg.model, device=_device())
    times = {"read": 0.0, "drr": 0.0, "enhance": 0.0, "write": 0.0}  # read: CT read + clean-up, once per CT
    done = skipped = 0
    failed: dict[str, str] = {}
    volume, volume_of, cleaned = None, None, None
    bar = tqdm(jobs, desc=f"dataset shard {rank}/{world}", unit="image", disable=not progress or None)
    for job in bar:
        rec_path = out / "records" / f"{job.image_id}.json"
        # a killed run may have left this job's half-written temporaries (only this shard writes this job)
        remove_stale_temporaries(rec_path)
        for fmt in cfg.formats:
            remove_stale_temporaries(out / "images" / f"{job.image_id}.{fmt}")
        if rec_path.is_file():
            skipped += 1
            continue
        if job.ct_name in failed:
            continue
        try:
            t0 = time.perf_counter()
            params = draw(job, cfg)
            p = DRRParams.from_request({k: v for k, v in params.items() if v is not None}, max_size=4096)
            if volume_of != job.ct:
                volume, volume_of, cleaned = None, None, None
                volume = read_ct(job.ct)
                cleaned = cleaned_ct(volume, p)  # once per CT: the clean-up does not depend on the image's draws
                volume_of = job.ct
            t1 = time.perf_counter()
            drr, labels = render(volume, p, cleaned=cleaned)
            t2 = time.perf_counter()
            lq_geometry = drr.geometry
            if enhancer is not None:
                img, grid, labels_out = enhance_drr(drr, labels, enhancer, scale=cfg.scale, sampler=cfg.sampler,
                                                    steps=cfg.steps, seed=p.seed)
            else:
                img, grid, labels_out = drr.image, drr.geometry, labels
            t3 = time.perf_counter()
            files = {}
            for fmt in cfg.formats:
                path = out / "images" / f"{job.image_id}.{fmt}"
                desc = f"DRR {p.view.upper()}" + (f" enhanced x{cfg.scale:g}" if enhancer is not None else "")
                _write_image(img, tuple(grid.pixel_spacing_mm), path, meta=drr.meta if fmt == "dcm" else None,
                             description=desc)
                files[fmt] = f"images/{path.name}"
            record = {
                "id": job.image_id, "ct": job.ct_name, "patient_id": job.ct_name, "split": job.split,
                "index": job.index, "files": files, "params": params, "enhanced": enhancer is not None,
                "height": int(img.shape[0]), "width": int(img.shape[1]),
                "pixel_spacing_mm": list(map(float, grid.pixel_spacing_mm)),
                "projection_matrix": np.asarray(grid.projection_matrix).tolist(),
                "lq": {"size": list(lq_geometry.size), "projection_matrix": np.asarray(lq_geometry.projection_matrix)
                       .tolist()},
                "view": p.view, "labels": labels_out,
                "model": (cfg.model if cfg.model == "shipped" else Path(cfg.model).name) if enhancer else None,
            }
            t4 = time.perf_counter()
            record["seconds"] = {"read": t1 - t0, "drr": t2 - t1, "enhance": t3 - t2, "write": t4 - t3}
            write_text_atomic(rec_path, json.dumps(jsonable(record)))  # last: the image is finished
            for k, v in record["seconds"].items():
                times[k] += v
            done += 1
        except DXRError as err:
            failed[job.ct_name] = str(err)
            write_text_atomic(out / "failures" / f"{job.ct_name}.json",
                              json.dumps({"ct": job.ct_name, "error": str(err)}))
    total = sum(times.values()) or 1.0
    return {"done": done, "skipped": skipped, "failed": failed, "seconds": times,
            "share": {k: v / total for k, v in times.items()}, "jobs": len(jobs)}


# ----------------------------------------------------------------------------------------------------------------
# merge: COCO per split, manifest, dataset card
# ----------------------------------------------------------------------------------------------------------------
def read_records(out: str | Path) -> list[dict]:
    recs = []
    for p in sorted((Path(out) / "records").glob("[!.]*.json")):  # .NAME.*.part.json: a killed write's temporary
        recs.append(json.loads(p.read_text(encoding="utf-8")))
    return recs


def coco_for(records: list[dict], file_format: str = "png") -> dict:
    from dxr_core.nodules.labels import to_coco

    items = []
    for r in records:
        geometry = SimpleNamespace(size=(r["height"], r["width"]), projection_matrix=r["projection_matrix"],
                                   view=r["view"])
        # a nodule whose projection covers no whole pixel at this size has an empty mask: kept in the record,
        # left out of COCO (a detector cannot be asked to find it)
        shown = [lab for lab in r["labels"] if lab.get("bbox") and lab["bbox"][2] > 0 and lab["bbox"][3] > 0]
        items.append((r["files"].get(file_format) or next(iter(r["files"].values())),
                      SimpleNamespace(geometry=geometry), shown))
    coco = to_coco(items)
    for img, r in zip(coco["images"], records):
        img.update({"patient_id": r["patient_id"], "pixel_spacing_mm": r["pixel_spacing_mm"], "record": r["id"]})
    return coco


def merge(out: str | Path) -> dict[str, Any]:
    """COCO ``train/val/test.json``, ``manifest.csv`` and the dataset card from every shard's records."""
    from dxr_core.io.atomic import write_text_atomic

    out = Path(out).expanduser()
    recs = read_records(out)
    if not recs:
        raise InputError(f"No finished images in {str(out)!r}; run `dxr dataset` first.")
    counts = {}
    for split in SPLITS:
        sub = [r for r in recs if r["split"] == split]
        counts[split] = {"images": len(sub), "nodules": sum(len(r["labels"]) for r in sub),
                         "patients": len({r["patient_id"] for r in sub})}
        write_text_atomic(out / f"{split}.json", json.dumps(coco_for(sub), indent=1))
    cols = ["id", "file", "split", "patient_id", "ct", "index", "view", "rotation", "kvp", "dose", "size", "seed",
            "nodules", "enhanced", "height", "width"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in recs:
        p = r["params"]
        w.writerow([r["id"], next(iter(r["files"].values())), r["split"], r["patient_id"], r["ct"], r["index"],
                    p["view"], f"{p['rotation']:.3f}", f"{p['kvp']:.2f}", f"{p['dose']:.1f}", p["size"], p["seed"],
                    len(r["labels"]), r["enhanced"], r["height"], r["width"]])
    write_text_atomic(out / "manifest.csv", buf.getvalue())
    failures = [json.loads(p.read_text()) for p in sorted((out / "failures").glob("[!.]*.json"))] \
        if (out / "failures").is_dir() else []
    write_card(out, recs, counts, failures)
    return {"counts": counts, "images": len(recs), "failures": failures}


def write_card(out: Path, recs: list[dict], counts: dict, failures: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dxr_core.io.atomic import atomic_path, write_text_atomic

    labels = [lab for r in recs for lab in r["labels"]]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].hist([lab.get("diameter_mm", 0) for lab in labels], bins=15, color="0.3")
    axes[0].set_xlabel("diameter (mm)")
    kinds = sorted({lab.get("category", "?") for lab in labels})
    axes[1].bar(kinds, [sum(lab.get("category") == k for lab in labels) for k in kinds], color="0.3")
    axes[1].set_xlabel("kind")
    vis = [lab.get("detectability", lab.get("visibility")) for lab in labels]
    axes[2].hist([v for v in vis if v is not None], bins=15, color="0.3")
    axes[2].set_xlabel("detectability d'" if labels and "detectability" in labels[0] else "visibility (CNR)")
    for a in axes:
        a.set_ylabel("nodules")
    fig.tight_layout()
    with atomic_path(out / "card_histograms.png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    _montage(out, recs[:8])
    lines = ["# Dataset card", "",
             "Made by `dxr dataset` (DiffusionXRay): synthetic lung nodules inserted in 3-D into CT,",
             "rendered as radiographs" + (" and enhanced with DDPM-HQ" if any(r["enhanced"] for r in recs) else "")
             + "; exact labels from the projection geometry.", "",
             "| split | images | nodules | patients (CTs) |", "|---|---|---|---|"]
    for split, c in counts.items():
        lines.append(f"| {split} | {c['images']} | {c['nodules']} | {c['patients']} |")
    lines += ["", f"Images without nodules: {sum(1 for r in recs if not r['labels'])} of {len(recs)}.", "",
              "![nodule diameter, kind and visibility](card_histograms.png)", "",
              "![examples with their boxes](card_montage.png)", "",
              "Files: `images/`, COCO `train.json` / `val.json` / `test.json` (no patient in two splits; every "
              "image carries its 3x4 `projection_matrix`, every annotation `centre_lps` and `centre_px`), "
              "`manifest.csv` (one row per image with every parameter), `records/` (the full record of each image), "
              "`config.json` (the run's configuration)."]
    if failures:
        lines += ["", "CTs that could not be used:", ""] + [f"- `{f['ct']}`: {f['error']}" for f in failures]
    write_text_atomic(out / "README.md", "\n".join(lines) + "\n")


def _montage(out: Path, recs: list[dict], tile: int = 256) -> None:
    from PIL import Image, ImageDraw

    from dxr_core.io.atomic import atomic_path
    from dxr_core.io.radiograph import read_radiograph

    tiles = []
    for r in recs:
        f = r["files"].get("png") or next(iter(r["files"].values()))
        img, _s, _m = read_radiograph(out / f)
        im = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).convert("RGB")
        sx, sy = tile / im.width, tile / im.height
        im = im.resize((tile, tile))
        d = ImageDraw.Draw(im)
        for lab in r["labels"]:
            x, y, w, h = lab["bbox"]
            d.rectangle([x * sx, y * sy, (x + w) * sx, (y + h) * sy], outline=(255, 64, 64), width=2)
        tiles.append(im)
    if not tiles:
        return
    cols = min(4, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tile, rows * tile))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * tile, (i // cols) * tile))
    with atomic_path(out / "card_montage.png") as tmp:
        sheet.save(tmp, format="PNG")
