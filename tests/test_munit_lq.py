"""MUNIT-LQ: network shapes, seeded translation, a tiny training that learns, exact resume, 2-process gloo, CLI and
the `munit` degradation hook."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import ROOT, run_dxr
from dxr_core.data.radiographs import list_radiographs, load_radiograph, resize_radiograph
from dxr_core.engines import MunitTrainConfig, read_munit_log, train_munit_lq
from dxr_core.errors import ModelError, OptionError
from dxr_core.models.munit import (MunitDiscriminators, MunitGenerators, MunitTranslator, discriminator_loss,
                                   get_munit_config, munit_losses, structure_loss, translate)

SAMPLE = ROOT / "tests" / "data" / "real_cxr_sample"
ARGS = dict(preset="tiny", progress=False, threads=1, val_every=10 ** 6, val_images=2)


def _blur(img: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma)


@pytest.fixture(scope="module")
def domains(unpaired_domains):
    return unpaired_domains


def test_shapes_and_losses():
    cfg = get_munit_config("tiny")
    gen, dis = MunitGenerators(cfg), MunitDiscriminators(cfg)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    s = torch.randn(2, cfg.style_dim)
    out = gen(x, x, s, s)
    assert out["c_a"].shape == (2, cfg.width * 4, 8, 8)
    assert out["s_a_recon"].shape == (2, cfg.style_dim)
    for k in ("x_ab", "x_ba", "x_a_recon", "x_b_recon"):
        assert out[k].shape == x.shape and out[k].abs().max() <= 1
    la, lb = dis(out["x_ba"], out["x_ab"])
    assert len(la) == len(lb) == cfg.n_scales and la[0].shape[:2] == (2, 1) and la[1].shape[-1] < la[0].shape[-1]
    terms = munit_losses(cfg, x, x, out, lb, la)
    assert torch.isfinite(terms["total"]) and set(terms) >= {"adv_a", "recon_x_b", "recon_c_a", "recon_s_b"}
    assert torch.isfinite(discriminator_loss(cfg, la, lb))
    paper = get_munit_config("paper")
    assert (paper.style_dim, paper.n_down, paper.n_res, paper.width, paper.n_scales, paper.lr, paper.recon_x_w,
            paper.crop, paper.batch_size) == (8, 2, 4, 64, 3, 1e-4, 10.0, 256, 1)
    with pytest.raises(OptionError, match="preset"):
        get_munit_config("huge")


def test_structure_and_cycle_losses():
    """The structure loss ignores a change of tone but not a change of anatomy; the cycle term appears when on."""
    cfg = get_munit_config("cpu-struct")
    assert cfg.struct_w > 0 and get_munit_config("cpu").struct_w == 0 == get_munit_config("paper").struct_w
    img = torch.from_numpy(_blur(np.random.default_rng(0).random((64, 64)), 1.5)).float()[None, None] * 8 - 4
    same_tone = structure_loss(cfg, img, img)
    other_tone = structure_loss(cfg, 0.3 * img + 0.2, img)       # an LQ look: lower contrast, brighter
    moved = structure_loss(cfg, torch.roll(img, 9, dims=-1), img)  # the anatomy moved
    assert same_tone < -0.99 and other_tone < -0.99 and moved > -0.3
    tiny = get_munit_config("tiny", recon_x_cyc_w=10.0, struct_w=1.0)
    gen, dis = MunitGenerators(tiny), MunitDiscriminators(tiny)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    s = torch.randn(2, tiny.style_dim)
    out = gen(x, x, s, s)
    la, lb = dis(out["x_ba"], out["x_ab"])
    terms = munit_losses(tiny, x, x, out, lb, la)
    assert out["x_aba"].shape == x.shape and terms["recon_cyc"] > 0 and -1 <= terms["struct"] <= 1
    plain = munit_losses(get_munit_config("tiny"), x, x, out, lb, la)
    assert torch.isclose(terms["total"] - plain["total"], 10 * terms["recon_cyc"] + terms["struct"])


def test_translate_is_seeded_and_roundtrips(tmp_path):
    torch.manual_seed(0)
    cfg = get_munit_config("tiny")
    tr = MunitTranslator(MunitGenerators(cfg), cfg, {"note": "untrained"})
    img = resize_radiograph(load_radiograph(list_radiographs(SAMPLE)[0])[0], 80)[:, :72]
    a, b, c = tr.translate(img, seed=3), tr.translate(img, seed=3), tr.translate(img, seed=4)
    assert a.dtype == np.float32 and a.shape == (64, 58) and 0 <= a.min() and a.max() <= 1  # on the 64-px grid
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    styled = tr.translate(img, style_from=_blur(img))
    assert styled.shape == a.shape
    assert tr.translate(img, seed=3, out_shape=(40, 36)).shape == (40, 36)
    path = tr.save(tmp_path / "m.pt", half=True)
    st = torch.load(path, weights_only=True)
    assert st["state_dict"]["gen_a.enc_content.net.0.1.weight"].dtype == torch.float16
    back = MunitTranslator.load(path)
    assert back.meta == {"note": "untrained"} and back.cfg == cfg
    assert np.abs(back.translate(img, seed=3) - a).max() < 0.02  # float16 weights
    assert np.array_equal(translate(img, seed=3, model=path), back.translate(img, seed=3))
    assert np.array_equal(translate(img, seed=3, model=path, style_from=img), back.translate(img, style_from=img))
    with pytest.raises(ModelError):
        MunitTranslator.load(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ModelError):
        MunitTranslator.load(tmp_path / "bad.pt")


def test_tiny_training_learns_the_lq_look(domains, tmp_path):
    """A short training lowers the reconstruction loss and moves HQ translations toward the blurred LQ domain."""
    from dxr_core.metrics.domain import spectrum_distance

    hq, lq = domains
    run = tmp_path / "run"
    iters = 160
    train_munit_lq(MunitTrainConfig(hq=str(hq), lq=str(lq), out=str(run), iters=iters, ckpt_every=iters, **ARGS))
    log = read_munit_log(run)
    assert [r["iteration"] for r in log] == list(range(1, iters + 1))
    first = np.mean([r["recon_x_a"] + r["recon_x_b"] for r in log[:10]])
    last = np.mean([r["recon_x_a"] + r["recon_x_b"] for r in log[-10:]])
    assert last < 0.6 * first, (first, last)

    hq_imgs = [load_radiograph(f)[0] for f in list_radiographs(hq)]
    lq_imgs = [load_radiograph(f)[0] for f in list_radiographs(lq)]
    trained = MunitTranslator.load(run / "model.pt")
    torch.manual_seed(0)
    untrained = MunitTranslator(MunitGenerators(trained.cfg), trained.cfg)
    d_trained = spectrum_distance([trained.translate(x, seed=i) for i, x in enumerate(hq_imgs)], lq_imgs, size=64)
    d_untrained = spectrum_distance([untrained.translate(x, seed=i) for i, x in enumerate(hq_imgs)], lq_imgs, size=64)
    assert d_trained["distance"] < 0.8 * d_untrained["distance"], (d_trained["distance"], d_untrained["distance"])
    assert trained.meta["iteration"] == iters and trained.meta["hq_images"] == 8


def test_stopped_training_resumes_exactly(domains, tmp_path):
    hq, lq = domains
    iters = 12
    ref = tmp_path / "ref"
    train_munit_lq(MunitTrainConfig(hq=str(hq), lq=str(lq), out=str(ref), iters=iters, ckpt_every=4, **ARGS))
    run = tmp_path / "stopped"
    cfg = dict(hq=str(hq), lq=str(lq), out=str(run), iters=iters, ckpt_every=4, **ARGS)
    s = train_munit_lq(MunitTrainConfig(stop_at=6, **cfg))
    assert s["iterations"] == 6 and not s["completed"]
    with open(run / "loss.jsonl", "a") as f:  # a killed run may have logged past its last checkpoint
        f.write(json.dumps({"iteration": 7, "total": 1e9}) + "\n")
    train_munit_lq(MunitTrainConfig(**cfg))
    a, b = read_munit_log(ref), read_munit_log(run)
    assert [r["iteration"] for r in b] == list(range(1, iters + 1))
    for k in ("total", "loss_d", "recon_x_a", "adv_b"):
        assert [r[k] for r in b] == pytest.approx([r[k] for r in a], rel=1e-5, abs=1e-7), k
    sa = torch.load(ref / "model.pt", weights_only=True)["state_dict"]
    sb = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ck = sorted((run / "checkpoints").glob("train_checkpoint_*.pt"))[-1]
    assert {"gen", "dis", "opt_g", "opt_d", "trainer"} <= set(torch.load(ck, weights_only=True))
    starts = json.loads((run / "run.json").read_text())["starts"]
    assert [s["from_iteration"] for s in starts] == [0, 6]


def test_gloo_two_processes(domains, tmp_path):
    hq, lq = domains
    out = tmp_path / "ddp"
    s = train_munit_lq(MunitTrainConfig(hq=str(hq), lq=str(lq), out=str(out), iters=4, ckpt_every=2,
                                        backend="gloo", nproc_per_node=2, **ARGS))
    assert s["world_size"] == 2 and s["completed"] and s["iterations"] == 4
    assert MunitTranslator.load(out / "model.pt").meta["iteration"] == 4
    assert len(read_munit_log(out)) == 4


def test_cli_and_degrade_hook(domains, tmp_path, capsys):
    from dxr_core.degrade import degrade

    hq, lq = domains
    from dxr_core.cli import main

    assert main(["train", "munit-lq", "--hq", str(hq), "--lq", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "x")]) != 0
    assert "--lq" in capsys.readouterr().err
    with pytest.raises(OptionError, match="preset"):
        train_munit_lq(MunitTrainConfig(hq=str(hq), lq=str(lq), out=str(tmp_path / "y"), preset="huge"))
    run = tmp_path / "cli"
    assert main(["train", "munit-lq", "--hq", str(hq), "--lq", str(lq), "--out", str(run), "--preset", "tiny",
                 "--iters", "2", "--val-every", "2", "--threads", "1", "--struct-w", "0.3", "--no-progress"]) == 0
    assert (run / "model.pt").is_file() and (run / "val.jsonl").is_file()
    assert json.loads((run / "run.json").read_text())["model_config"]["struct_w"] == 0.3  # overrides the preset's 0
    with pytest.raises(OptionError, match="struct-w"):
        train_munit_lq(MunitTrainConfig(hq=str(hq), lq=str(lq), out=str(tmp_path / "z"), preset="tiny",
                                        struct_w=-1.0))
    img = load_radiograph(list_radiographs(hq)[0])[0]
    out1, params = degrade(img, "munit", seed=5, model=str(run / "model.pt"), return_params=True)
    out2 = degrade(img, "munit", seed=5, model=str(run), style_from=str(list_radiographs(lq)[0]))
    assert out1.shape == out2.shape == (32, 32) and params["model_iteration"] == 2
    assert np.array_equal(out1, degrade(img, "munit", seed=5, model=str(run / "model.pt")))
    with pytest.raises(ModelError, match="model"):
        degrade(img, "munit", seed=5, model=str(tmp_path / "none.pt"))
    proc = run_dxr("degrade", "--method", "munit", "--option", f"model={json.dumps(str(run / 'model.pt'))}",
                   hq, "--out", tmp_path / "deg", "--no-progress")  # the real command line, once
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "deg").glob("*.png"))) == 8
