#!/usr/bin/env python3
"""Train, export, evaluate and document Lucent's low-dose CT slice denoisers (`lucent-ldct-denoise-*`).

    target/lucent-data/venv-train/bin/pip install -r models/training/requirements.txt
    target/lucent-data/venv-train/bin/python models/training/ldct_denoise.py all

Two sizes of one design (residual CNN: 3x3 conv + batch norm + ReLU, residual modules, residual
learning: the network predicts the noise and subtracts it):

  fast  64 channels, 4 residual modules (10 conv layers) on a half-resolution grid (2 x 2 pixel
        unshuffle in, pixel shuffle out): for CPUs
  full  128 channels, 5 residual modules (12 conv layers): meant for a GPU (trained briefly on CPU)

`all` runs the steps below in order; each can also run alone (they read what the previous one wrote
under target/lucent-data/ldct-training/):

  data      full-dose / quarter-dose slice pairs simulated in the projection domain: HU -> linear
            attenuation, parallel-beam forward projection (skimage radon, 512 views over 180 deg),
            Poisson + Gaussian electronic noise at 25 % of the dose, log, filtered back-projection
            (Hann-apodised ramp). Real slices (the ACRIN chest CT in ../shared/data, decoded with
            DCMTK's dcmdjpls; pydicom's CT_small.dcm) get the noise that removing 75 % of their dose
            adds (Yu et al. 2012); synthetic chest phantoms are reconstructed from noisy sinograms
            at both doses. Slices go through the manifest's HU window exactly as Lucent does
            (inference/src/ct.rs `denoise`).
  train     both models on 64 x 64 (fast) / 48 x 48 (full) patches, L1 loss, seed 0, deterministic,
            one thread
  export    ONNX opset 17 (dynamic batch, height and width), checked against torch
  evaluate  held-out slices (real and synthetic): PSNR / SSIM of quarter dose, total variation
            (scikit-image), BM3D (`bm3d` package) and both models; timing; Lucent's own pipeline
            (`lucent read --derived`) on the ACRIN series checked against Python + ONNX Runtime;
            manifests, metrics.json and figure.png
  ci        `lucent synth-ct --kind dose-pairs` (2 pairs of Lucent's own phantom) evaluated by `lucent eval`:
            the figures CI re-checks (app/tests/eval.rs), with TV / BM3D / Python ONNX Runtime on the same slices
  card      MODEL_CARD.md from metrics.json

Nothing here downloads anything.
"""

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, lucent_bin, real_data, record_time  # noqa: E402


WORK = ROOT / "target" / "lucent-data" / "ldct-training"
MODEL_DIR = ROOT / "models" / "lucent-ldct-denoise"
VERSION = "0.2.0"  # the card's; each model has its own below (0.2.0: the fast size on a half-resolution grid)
SEED = 0

# What the manifest declares and Lucent does: clamp HU to the window, to [0, 1], then (x - m) / s.
HU_MIN, HU_MAX = -1024.0, 3071.0
NORM_MEAN, NORM_STD = 0.25, 0.125  # ~ HU / 512 around water
# Metrics window (PSNR / SSIM computed on HU clipped to this and mapped to [0, 1]).
EVAL_MIN, EVAL_MAX = -1000.0, 400.0
# Figure display window (soft tissue, where the noise shows).
FIG_MIN, FIG_MAX = -160.0, 240.0

MODELS = {
    # fast: the same residual modules on a half-resolution grid (pixel unshuffle 2 x 2 -> 4 channels in, pixel
    # shuffle back out, as FFDNet does): a 4x cheaper layer buys 64 channels and a receptive field of 42 pixels.
    "fast": {"id": "lucent-ldct-denoise-fast", "channels": 64, "blocks": 4, "shuffle": 2, "steps": 3000, "batch": 16,
             "patch": 80, "lr": 1e-3, "evals": 8, "version": "0.2.0"},
    "full": {"id": "lucent-ldct-denoise-full", "channels": 128, "blocks": 5, "steps": 600, "batch": 4, "patch": 48,
             "lr": 5e-4, "evals": 1, "version": "0.1.0"},
}

# Projection-domain simulation.
N_VIEWS = 512
MU_WATER = 0.02  # 1/mm, about 70 keV
DOSE_FRACTION = 0.25
SIGMA_E = 5.0  # electronic noise, counts per ray
SYN_PIXEL_MM = 0.9
SIZE = 512

# ACRIN series: index in z order. A held-out block (never trained on) for validation and test.
ACRIN_HOLDOUT = range(56, 84)
ACRIN_VAL = [57, 82]
ACRIN_TEST = [62, 67, 72, 77]
SYN_SPLITS = {"train": 36, "val": 2, "test": 4}
# The set Lucent generates and evaluates itself (`lucent synth-ct --kind dose-pairs`), re-checked by CI.
CI_SEED, CI_COUNT = "lucent-ldct-denoise-ci", 2


def log(msg):
    print(f"[ldct {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Lucent's preprocessing (inference/src/ct.rs `denoise`), in float32 like Rust.

SPAN = np.float32(HU_MAX - HU_MIN)
SCALE = np.float32(1.0 / NORM_STD)
OFFSET = np.float32(-NORM_MEAN / NORM_STD)


def to_model(hu):
    hu = np.asarray(hu, np.float32)
    return (np.minimum(np.maximum(hu, np.float32(HU_MIN)), np.float32(HU_MAX)) - np.float32(HU_MIN)) / SPAN * SCALE + OFFSET


def from_model(y, original_hu):
    """Back to HU; voxels outside the window keep their value (as Lucent does)."""
    hu = (np.asarray(y, np.float32) - OFFSET) * np.float32(1.0 / SCALE) * SPAN + np.float32(HU_MIN)
    inside = (original_hu >= HU_MIN) & (original_hu <= HU_MAX)
    return np.where(inside, hu, original_hu).astype(np.float32)


def to_eval(hu):
    return ((np.clip(hu, EVAL_MIN, EVAL_MAX) - EVAL_MIN) / (EVAL_MAX - EVAL_MIN)).astype(np.float64)


def from_eval(u):
    return (u * (EVAL_MAX - EVAL_MIN) + EVAL_MIN).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Real slices


def acrin_slices():
    """The ACRIN series decoded (JPEG-LS -> uncompressed with DCMTK's dcmdjpls, cached), in z order:
    list of (z, HU array, pixel mm, file name)."""
    import pydicom

    src = real_data("ct-acrin-chest", "*.dcm")
    if src is None:
        return []
    raw = WORK / "acrin-raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted(glob.glob(str(src / "*.dcm"))):
        dst = raw / Path(f).name
        if not dst.exists():
            subprocess.run(["dcmdjpls", f, str(dst)], check=True)
        d = pydicom.dcmread(dst)
        hu = d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
        out.append((float(d.ImagePositionPatient[2]), hu, float(d.PixelSpacing[0]), Path(f).name))
    out.sort(key=lambda t: t[0])
    return out


def ct_small():
    import pydicom

    for base in (ROOT / "target" / "lucent-data" / "pydicom-test-files", ROOT / "target" / "lucent-data" / "pydicom-data"):
        p = base / "CT_small.dcm"
        if p.exists():
            d = pydicom.dcmread(p)
            hu = d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
            return hu, float(d.PixelSpacing[0])
    return None


# ---------------------------------------------------------------------------------------------
# Synthetic chest phantoms (drawn at 2x and averaged down: partial volume at edges)


def phantom(rng, n=SIZE, pixel_mm=SYN_PIXEL_MM):
    from scipy.ndimage import gaussian_filter

    m = 2 * n
    px = pixel_mm / 2
    c = (np.arange(m) - m / 2 + 0.5) * px
    yy, xx = np.meshgrid(c, c, indexing="ij")
    img = np.full((m, m), -1000.0, np.float32)

    def ell(cx, cy, a, b, ang=0.0):
        ca, sa = np.cos(ang), np.sin(ang)
        u = (xx - cx) * ca + (yy - cy) * sa
        v = -(xx - cx) * sa + (yy - cy) * ca
        return (u / a) ** 2 + (v / b) ** 2 <= 1

    def texture(sd, sigma_px):
        t = gaussian_filter(rng.standard_normal((m // 4, m // 4)).astype(np.float32), sigma_px / 4)
        t = np.kron(t / (t.std() + 1e-6), np.ones((4, 4), np.float32))
        return sd * t

    a = rng.uniform(140, 185)
    b = rng.uniform(95, 130)
    body = ell(0, 0, a, b)
    img[body] = rng.uniform(-110, -80)  # subcutaneous fat
    inner = ell(0, 0, a - rng.uniform(8, 20), b - rng.uniform(8, 18))
    img[inner] = rng.uniform(30, 55)  # muscle / soft tissue
    img += np.where(inner, texture(8, 24), 0)
    # Lungs
    lung_mask = np.zeros_like(body)
    for side in (-1, 1):
        lm = ell(side * a * rng.uniform(0.4, 0.5), -b * 0.05, a * rng.uniform(0.3, 0.38), b * rng.uniform(0.62, 0.75),
                 side * rng.uniform(-0.15, 0.15))
        lung_mask |= lm
    img[lung_mask] = -860 + texture(25, 10)[lung_mask]
    # Mediastinum, heart, aorta
    heart = ell(rng.uniform(-15, 25), b * rng.uniform(0.05, 0.3), a * rng.uniform(0.22, 0.3), b * rng.uniform(0.3, 0.45))
    img[heart & inner] = rng.uniform(35, 50)
    contrast = rng.uniform(40, 260)
    img[ell(rng.uniform(-25, -5), -b * rng.uniform(0.15, 0.3), 13, 13)] = contrast
    img[ell(rng.uniform(10, 30), b * rng.uniform(0.45, 0.6), 10, 10)] = contrast * 0.9 if rng.random() < 0.7 else 35
    # Spine and ribs
    sy = b * rng.uniform(0.55, 0.7)
    img[ell(0, sy, 17, 15)] = rng.uniform(250, 450)
    cortex = ell(0, sy, 17, 15) & ~ell(0, sy, 14, 12)
    img[cortex] = rng.uniform(800, 1200)
    img[ell(0, sy - 30, 8, 10)] = rng.uniform(30, 45)  # spinal canal-ish
    for t in np.linspace(0.15, np.pi - 0.15, rng.integers(6, 11)):
        for side in (-1, 1):
            rx, ry = side * (a - 12) * np.cos(t), (b - 10) * np.sin(t) * (1 if rng.random() < 0.8 else -1)
            img[ell(rx, ry, rng.uniform(4, 7), rng.uniform(2.5, 4), t)] = rng.uniform(500, 1000)
    # Vessels in the lungs (dots and short segments)
    for _ in range(int(rng.integers(60, 140))):
        vx, vy = rng.uniform(-a, a), rng.uniform(-b, b)
        r = rng.uniform(0.6, 4.0)
        e = ell(vx, vy, r * rng.uniform(1, 4), r, rng.uniform(0, np.pi)) & lung_mask
        img[e] = rng.uniform(-100, 60)
    # Nodules
    for _ in range(int(rng.integers(1, 4))):
        for _try in range(20):
            nx, ny = rng.uniform(-a, a), rng.uniform(-b, b)
            ix, iy = int((nx / px) + m / 2), int((ny / px) + m / 2)
            if 0 <= ix < m and 0 <= iy < m and lung_mask[iy, ix]:
                break
        r = rng.uniform(2, 10)
        hu = rng.choice([-650.0, -450.0, -200.0, 30.0, 60.0])
        img[ell(nx, ny, r, r * rng.uniform(0.8, 1.2), rng.uniform(0, np.pi))] = hu
        if hu < -300 and rng.random() < 0.5:
            img[ell(nx, ny, r * 0.4, r * 0.4)] = 40.0  # part-solid
    # Table
    img[(yy > b + 15) & (yy < b + 25) & (np.abs(xx) < a + 20)] = rng.uniform(-300, -100)
    img = img.reshape(n, 2, n, 2).mean(axis=(1, 3))
    return img.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Projection-domain simulation


def circle_mask(n):
    c = (np.arange(n) - (n - 1) / 2)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return xx**2 + yy**2 <= (n // 2 - 1) ** 2


def sinogram(hu, pixel_mm):
    """Line integrals of mu (dimensionless) through the slice, [detector, view]."""
    from skimage.transform import radon

    mu = np.maximum(MU_WATER * (1 + hu.astype(np.float64) / 1000.0), 0.0)
    mu[~circle_mask(hu.shape[0])] = 0.0
    theta = np.linspace(0.0, 180.0, N_VIEWS, endpoint=False)
    return radon(mu, theta, circle=True) * pixel_mm


def fbp_hu(p, pixel_mm, n):
    """Filtered back-projection of line integrals back to HU (a noise sinogram gives noise HU)."""
    from skimage.transform import iradon

    theta = np.linspace(0.0, 180.0, N_VIEWS, endpoint=False)
    mu = iradon(p / pixel_mm, theta, output_size=n, circle=True, filter_name="hann")
    return (mu / MU_WATER * 1000.0).astype(np.float32)


def noisy_log(p, i0, rng):
    """Transmitted counts: Poisson(I0 exp(-p)) + Gaussian electronic noise; back to line integrals."""
    counts = rng.poisson(i0 * np.exp(-p)).astype(np.float64) + rng.normal(0.0, SIGMA_E, p.shape)
    return -np.log(np.maximum(counts, 1.0) / i0)


def extra_noise(p, i0, a, rng):
    """Post-log noise that lowering the dose of a scan taken at I0 to a fraction `a` adds
    (Poisson + electronic noise; Yu et al., Med Phys 2012, Gaussian approximation)."""
    e = np.exp(p)
    var = (1 - a) / a * e / i0 * (1 + (1 + a) / a * SIGMA_E**2 * e / i0)
    return rng.normal(0.0, 1.0, p.shape) * np.sqrt(var)


def hp_noise_sd(img, mask):
    """Noise SD estimate: SD of the image minus its Gaussian smoothing (sigma 2 px), in a mask."""
    from scipy.ndimage import gaussian_filter

    d = img - gaussian_filter(img, 2.0)
    return float(d[mask].std())


def soft_tissue_mask(hu):
    from scipy.ndimage import binary_erosion, gaussian_filter

    s = gaussian_filter(hu, 3.0)
    return binary_erosion((s > -50) & (s < 120), iterations=6)


def calibrate_real_i0(slices, rng):
    """The I0 at which our simulation reproduces the ACRIN series' own noise (its full dose)."""
    i0_nom = 1e5
    ratios = []
    for _, hu, pix, _ in slices:
        mask = soft_tissue_mask(hu)
        if mask.sum() < 2000:
            continue
        p = sinogram(hu, pix)
        # Noise of a scan at I0_nom: a = 0.5 gives (1-a)/a = 1 times the Poisson variance at I0_nom.
        e = np.exp(p)
        noise = fbp_hu(rng.normal(0, 1, p.shape) * np.sqrt(e / i0_nom), pix, hu.shape[0])
        ratios.append((hp_noise_sd(noise, mask) / hp_noise_sd(hu, mask)) ** 2)
    return i0_nom * float(np.median(ratios)), len(ratios)


# ---------------------------------------------------------------------------------------------
# data


def step_data(args):
    t0 = time.time()
    rng = np.random.default_rng(SEED)
    info = {}
    acrin = acrin_slices()
    if args.quick:
        acrin = acrin[::9]
    info["acrin_slices"] = len(acrin)
    if acrin:
        mid = [acrin[i] for i in (len(acrin) // 3, len(acrin) // 2, 2 * len(acrin) // 3)]
        i0_real, n_cal = calibrate_real_i0(mid, rng)
        info["acrin_noise_sd_hu"] = [round(hp_noise_sd(h, soft_tissue_mask(h)), 2) for _, h, _, _ in mid]
    else:
        i0_real, n_cal = 2e4, 0
    i0_syn = 2.0 * i0_real  # synthetic "routine" dose: twice the ACRIN series' dose
    info.update({"i0_real": i0_real, "i0_synthetic": i0_syn, "calibration_slices": n_cal, "views": N_VIEWS,
                 "mu_water_per_mm": MU_WATER, "sigma_e_counts": SIGMA_E, "dose_fraction": DOSE_FRACTION})
    log(f"I0 (counts per ray per view): real series {i0_real:.3g}, synthetic routine dose {i0_syn:.3g}")
    splits = {"train": [], "val": [], "test": []}
    sources = []
    for k, (z, hu, pix, name) in enumerate(acrin):
        if args.quick:
            split = ["train", "train", "val", "test"][k % 4]
        elif k in ACRIN_VAL:
            split = "val"
        elif k in ACRIN_TEST:
            split = "test"
        elif k in ACRIN_HOLDOUT or k % 3:
            continue
        else:
            split = "train"
        sources.append((split, f"acrin-{k:03d}", "real", hu, pix, {"z_mm": z, "file": name}))
    small = ct_small()
    if small is not None:
        sources.append(("test", "pydicom-CT_small", "real", small[0], small[1], {"file": "CT_small.dcm"}))
    syn_counts = {k: (max(v // 10, 2) if args.quick else v) for k, v in SYN_SPLITS.items()}
    for split, count in syn_counts.items():
        prng = np.random.default_rng([SEED, {"train": 1, "val": 2, "test": 3}[split]])
        for i in range(count):
            sources.append((split, f"synthetic-{split}-{i:03d}", "synthetic", phantom(prng), SYN_PIXEL_MM, {}))
    log(f"simulating {len(sources)} slices ({N_VIEWS} views)")
    for j, (split, name, kind, hu, pix, meta) in enumerate(sources):
        srng = np.random.default_rng([SEED, 7, j])
        npx = hu.shape[0]
        # Training slices get a random dose scale (0.5x-2x) so the model sees a range of noise levels.
        scale = float(np.exp(srng.uniform(np.log(0.5), np.log(2.0)))) if split == "train" else 1.0
        p = sinogram(hu, pix)
        if kind == "real":
            ref = hu
            quarter = hu + fbp_hu(extra_noise(p, i0_real * scale, DOSE_FRACTION, srng), pix, npx)
            quarter = np.where(circle_mask(npx), quarter, hu)
            clean = None
        else:
            clean = hu
            i0 = i0_syn * scale
            ref = fbp_hu(noisy_log(p, i0, srng), pix, npx) - 1000.0
            quarter = fbp_hu(noisy_log(p, i0 * DOSE_FRACTION, srng), pix, npx) - 1000.0
            outside = ~circle_mask(npx)
            ref[outside] = -1024.0
            quarter[outside] = -1024.0
        splits[split].append({"name": name, "kind": kind, "ref": ref.astype(np.float32),
                              "quarter": quarter.astype(np.float32), "pixel_mm": pix, "dose_scale": scale,
                              "clean": None if clean is None else clean.astype(np.float32), **meta})
        if (j + 1) % 10 == 0:
            log(f"  {j + 1}/{len(sources)} slices")
    for split, items in splits.items():
        np.save(WORK / f"{split}.npy", np.array(items, dtype=object), allow_pickle=True)
        log(f"{split}: {len(items)} slices ({sum(i['kind'] == 'real' for i in items)} real)")
    # Noise check on the synthetic validation slices: quarter vs routine noise SD in soft tissue.
    sds = []
    for it in splits["val"] + splits["test"]:
        if it["kind"] == "synthetic":
            mask = soft_tissue_mask(it["clean"])
            sds.append((float((it["ref"] - it["clean"])[mask].std()), float((it["quarter"] - it["clean"])[mask].std())))
        else:
            mask = soft_tissue_mask(it["ref"])
            if mask.sum() > 500:
                sds.append((hp_noise_sd(it["ref"], mask), hp_noise_sd(it["quarter"], mask)))
    info["noise_sd_check"] = [[round(a, 1), round(b, 1)] for a, b in sds]
    log(f"noise SD (routine, quarter) HU in soft tissue: {info['noise_sd_check']}")
    (WORK / "data_info.json").write_text(json.dumps(info, indent=2))
    record_time(WORK, "data", time.time() - t0)


# ---------------------------------------------------------------------------------------------
# The network


def build_model(kind):
    import torch
    from torch import nn

    cfg = MODELS[kind]
    c = cfg["channels"]

    class ResModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(x + self.body(x))

    class Denoiser(nn.Module):
        """conv3x3 + ReLU -> residual modules (conv-BN-ReLU-conv-BN + skip) -> conv3x3 = noise;
        output = input - noise (in the manifest's model units)."""

        def __init__(self):
            super().__init__()
            self.s = cfg.get("shuffle", 1)
            k = self.s * self.s
            self.head = nn.Sequential(nn.Conv2d(k, c, 3, padding=1), nn.ReLU(inplace=True))
            self.blocks = nn.Sequential(*[ResModule() for _ in range(cfg["blocks"])])
            self.tail = nn.Conv2d(c, k, 3, padding=1)
            nn.init.normal_(self.tail.weight, std=1e-3)
            nn.init.zeros_(self.tail.bias)

        def forward(self, x):
            if self.s == 1:
                return x - self.tail(self.blocks(self.head(x)))
            # Odd sizes: pad the last row / column by replication, crop it off at the end (traced into the
            # ONNX graph, so Lucent feeds any slice size).
            h, w = x.shape[-2], x.shape[-1]
            xp = nn.functional.pad(x, (0, (self.s - w % self.s) % self.s, 0, (self.s - h % self.s) % self.s),
                                   mode="replicate")
            noise = nn.functional.pixel_shuffle(
                self.tail(self.blocks(self.head(nn.functional.pixel_unshuffle(xp, self.s)))), self.s)
            return (xp - noise)[:, :, :h, :w]

    torch.manual_seed(SEED)
    return Denoiser()


def sample_batch(items, cfg, gen):
    """Random 64 x 64 patches (mostly inside the body), flips and 90-degree rotations."""
    b, ps = cfg["batch"], cfg["patch"]
    xs, ys = np.zeros((b, 1, ps, ps), np.float32), np.zeros((b, 1, ps, ps), np.float32)
    for k in range(b):
        for _try in range(10):
            it = items[int(gen.integers(len(items)))]
            h, w = it["ref"].shape
            y0, x0 = int(gen.integers(h - ps + 1)), int(gen.integers(w - ps + 1))
            r = it["ref"][y0 : y0 + ps, x0 : x0 + ps]
            if (r > -950).mean() > 0.4:
                break
        q = it["quarter"][y0 : y0 + ps, x0 : x0 + ps]
        x, y = to_model(q), to_model(r)
        rot = int(gen.integers(4))
        x, y = np.rot90(x, rot), np.rot90(y, rot)
        if gen.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        xs[k, 0], ys[k, 0] = x, y
    return xs, ys


def centre(a, s=192):
    h, w = a.shape
    s = min(s, h, w)
    return a[(h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2]


def val_psnr(model, items):
    """Mean PSNR on the central 192 x 192 of the validation slices (cheap enough to watch training)."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for it in items:
            q = centre(it["quarter"])
            x = torch.from_numpy(to_model(q)[None, None])
            hu = from_model(model(x).numpy()[0, 0], q)
            out.append(psnr(to_eval(centre(it["ref"])), to_eval(hu)))
    model.train()
    return float(np.mean(out))


def step_train(args):
    import torch

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    train = list(np.load(WORK / "train.npy", allow_pickle=True))
    val = list(np.load(WORK / "val.npy", allow_pickle=True))
    for kind in args.models:
        cfg = dict(MODELS[kind])
        cfg["threads"] = args.threads
        if args.quick:
            cfg["steps"] = 20
        if kind == "fast" and args.fast_steps:
            cfg["steps"] = args.fast_steps
        if kind == "full" and args.full_steps:
            cfg["steps"] = args.full_steps
        t0 = time.time()
        np.random.seed(SEED)
        gen = np.random.default_rng([SEED, 11])
        model = build_model(kind)
        params = sum(p.numel() for p in model.parameters())
        log(f"{kind}: {params} parameters, {cfg['steps']} steps of {cfg['batch']} patches {cfg['patch']}^2, "
            f"{args.threads} thread(s)")
        opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=cfg["steps"], pct_start=0.1)
        history = [{"step": 0, "val_psnr": round(val_psnr(model, val), 3)}]
        log(f"{kind}: step 0 val PSNR {history[-1]['val_psnr']}")
        model.train()
        run, since = 0.0, 0
        every = max(cfg["steps"] // cfg["evals"], 1)
        for step in range(1, cfg["steps"] + 1):
            xs, ys = sample_batch(train, cfg, gen)
            out = model(torch.from_numpy(xs))
            loss = torch.nn.functional.l1_loss(out, torch.from_numpy(ys))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            run += float(loss)
            since += 1
            if step % 25 == 0:
                log(f"{kind}: step {step}/{cfg['steps']}, {time.time() - t0:.0f} s")
            if step % every == 0 or step == cfg["steps"]:
                entry = {"step": step, "train_l1": round(run / since, 5), "val_psnr": round(val_psnr(model, val), 3),
                         "seconds": round(time.time() - t0, 1)}
                run, since = 0.0, 0
                history.append(entry)
                log(f"{kind}: {json.dumps(entry)}")
        torch.save(model.state_dict(), WORK / f"{kind}.pt")
        (WORK / f"history_{kind}.json").write_text(json.dumps({"config": cfg, "parameters": params,
                                                               "history": history}, indent=2))
        record_time(WORK, f"train_{kind}", time.time() - t0)


# ---------------------------------------------------------------------------------------------
# export


def onnx_name(kind):
    return f"{MODELS[kind]['id']}.onnx"


def step_export(args):
    import onnx
    import onnxruntime as ort
    import torch

    t0 = time.time()
    torch.set_num_threads(args.threads)
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    for kind in args.models:
        model = build_model(kind)
        model.load_state_dict(torch.load(WORK / f"{kind}.pt", weights_only=True))
        model.eval()
        tmp = WORK / f"export_{kind}.onnx"
        torch.onnx.export(
            model, torch.zeros(1, 1, 64, 64), str(tmp), opset_version=17,
            input_names=["ct"], output_names=["denoised"],
            dynamic_axes={"ct": {0: "N", 2: "H", 3: "W"}, "denoised": {0: "N", 2: "H", 3: "W"}},
            do_constant_folding=True, dynamo=False,
        )
        m = onnx.load(str(tmp))
        m.producer_name = "lucent/models/training/ldct_denoise.py"
        m.producer_version = MODELS[kind]["version"]
        m.doc_string = (f"Lucent low-dose CT slice denoiser ({kind}). Research and demonstration only; "
                        "not for diagnosis.")
        onnx.checker.check_model(m, full_check=True)
        data = m.SerializeToString(deterministic=True)
        (MODEL_DIR / onnx_name(kind)).write_bytes(data)
        x = np.random.default_rng(0).normal(0, 0.5, (2, 1, 96, 80)).astype(np.float32)
        sess = ort.InferenceSession(str(MODEL_DIR / onnx_name(kind)), providers=["CPUExecutionProvider"])
        (y,) = sess.run(None, {"ct": x})
        with torch.no_grad():
            t = model(torch.from_numpy(x)).numpy()
        diff = float(np.abs(y - t).max())
        log(f"{kind}: exported {len(data)} bytes; ONNX Runtime vs torch max abs difference {diff:.2e}")
        if diff > 1e-3:
            sys.exit(f"ONNX and torch disagree by {diff}")
    record_time(WORK, "export", time.time() - t0)


# ---------------------------------------------------------------------------------------------
# Metrics


def psnr(ref, x):
    mse = float(np.mean((ref - x) ** 2))
    return 10 * np.log10(1.0 / mse)


def ssim(ref, x):
    from skimage.metrics import structural_similarity

    return float(structural_similarity(ref, x, data_range=1.0))


def tv_denoise(hu, weight):
    from skimage.restoration import denoise_tv_chambolle

    return from_eval(denoise_tv_chambolle(to_eval(hu), weight=weight))


def bm3d_denoise(hu, sigma):
    import bm3d

    return from_eval(np.asarray(bm3d.bm3d(to_eval(hu), sigma_psd=sigma), np.float64))


def ort_session(kind, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(MODEL_DIR / onnx_name(kind)), so, providers=["CPUExecutionProvider"])


def model_denoise(sess, hu):
    (y,) = sess.run(None, {"ct": to_model(hu)[None, None]})
    return from_model(y[0, 0], hu)


def write_manifest(kind, data_info):
    cfg = MODELS[kind]
    data = (MODEL_DIR / onnx_name(kind)).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    hist = json.loads((WORK / f"history_{kind}.json").read_text())
    what = {"fast": "fast CPU size (64 channels, 4 residual modules on a half-resolution grid: 2x2 pixel unshuffle in, "
                    "pixel shuffle out)",
            "full": "full size (128 channels, 5 residual modules; under-trained on CPU, meant for GPU training)"}[kind]
    text = f'''# Generated by models/training/ldct_denoise.py: do not edit by hand. See MODEL_CARD.md.
id = "{cfg['id']}"
name = "Lucent low-dose CT slice denoiser, {kind} (trained on simulated quarter-dose pairs)"
version = "{cfg['version']}"
file = "{onnx_name(kind)}"
sha256 = "{sha}"
license = "MIT OR Apache-2.0"
provenance = "Trained from scratch by models/training/ldct_denoise.py (PyTorch 2.5.1, seed {SEED}, CPU, {hist['config']['steps']} steps of {hist['config']['batch']} {hist['config']['patch']}x{hist['config']['patch']} patches) on quarter-dose / full-dose slice pairs simulated in the projection domain (Poisson + electronic noise at 25% dose, filtered back-projection) from {data_info['train_real']} slices of one real low-dose chest CT (TCIA ACRIN-NSCLC-FDG-PET, CC BY 3.0) and {data_info['train_synthetic']} synthetic chest phantoms; {what}. {len(data)} bytes."
intended_use = "Research and demonstration only; not for diagnosis. Reduces noise in low-dose chest CT slices for viewing in Lucent. Trained on simulated noise from one real series and synthetic phantoms; it may blur or invent fine detail (see MODEL_CARD.md)."
test_only = false
run_by_default = {"true" if kind == "fast" else "false"}
modalities = ["CT"]
body_parts = ["CHEST"]

[[inputs]]
name = "ct"
dtype = "float32"
shape = [-1, 1, -1, -1]

[preprocessing]
kind = "ct_slice"
hu_window = {{ min = {HU_MIN}, max = {HU_MAX} }}
normalization = {{ kind = "mean_std", mean = [{NORM_MEAN}], std = [{NORM_STD}] }}

[[outputs]]
name = "denoised"
dtype = "float32"
shape = [-1, 1, -1, -1]
kind = "denoised_image"
'''
    (MODEL_DIR / f"{cfg['id']}.toml").write_text(text)
    return sha, len(data)


def time_model(kind, threads, size=512, reps=3):
    sess = ort_session(kind, threads)
    x = np.random.default_rng(1).normal(0, 0.1, (1, 1, size, size)).astype(np.float32)
    sess.run(None, {"ct": x})
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        sess.run(None, {"ct": x})
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def step_evaluate(args):
    t0 = time.time()
    data_info = json.loads((WORK / "data_info.json").read_text())
    train = np.load(WORK / "train.npy", allow_pickle=True)
    val = list(np.load(WORK / "val.npy", allow_pickle=True))
    test = list(np.load(WORK / "test.npy", allow_pickle=True))
    data_info["train_real"] = int(sum(i["kind"] == "real" for i in train))
    data_info["train_synthetic"] = int(sum(i["kind"] == "synthetic" for i in train))
    del train
    metrics = {"version": VERSION, "data": data_info,
               "eval_window_hu": [EVAL_MIN, EVAL_MAX], "model_window_hu": [HU_MIN, HU_MAX]}
    for kind in args.models:
        sha, size = write_manifest(kind, data_info)
        hist = json.loads((WORK / f"history_{kind}.json").read_text())
        metrics[kind] = {"id": MODELS[kind]["id"], "sha256": sha, "bytes": size, "parameters": hist["parameters"],
                         "train": hist["config"], "history": hist["history"]}

    # Baseline parameters tuned on validation (central 256 x 256 crops, best mean PSNR).
    def crop(a):
        h, w = a.shape
        s = min(256, h, w)
        return a[(h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2]

    tv_grid = [0.01, 0.02, 0.04, 0.06, 0.1]
    bm3d_grid = [0.01, 0.02, 0.03, 0.045]
    if args.quick:
        tv_grid, bm3d_grid = tv_grid[:2], bm3d_grid[:2]
    tv_scores = {w: np.mean([psnr(to_eval(crop(it["ref"])), to_eval(tv_denoise(crop(it["quarter"]), w))) for it in val])
                 for w in tv_grid}
    tv_w = max(tv_scores, key=tv_scores.get)
    log(f"TV weight on validation: {tv_w} ({ {k: round(v, 2) for k, v in tv_scores.items()} })")
    bm_scores = {s: np.mean([psnr(to_eval(crop(it["ref"])), to_eval(bm3d_denoise(crop(it["quarter"]), s))) for it in val])
                 for s in bm3d_grid}
    bm_s = max(bm_scores, key=bm_scores.get)
    log(f"BM3D sigma on validation: {bm_s} ({ {k: round(v, 2) for k, v in bm_scores.items()} })")
    metrics["tv_weight"], metrics["bm3d_sigma"] = tv_w, bm_s
    metrics["tv_validation_psnr"] = {str(k): round(float(v), 3) for k, v in tv_scores.items()}
    metrics["bm3d_validation_psnr"] = {str(k): round(float(v), 3) for k, v in bm_scores.items()}

    sessions = {k: ort_session(k, args.threads) for k in args.models}
    methods = ["quarter", "tv", "bm3d"] + list(args.models)
    rows = []
    outputs = {}
    for it in test:
        ref = to_eval(it["ref"])
        res = {"quarter": it["quarter"]}
        ts = time.perf_counter()
        res["tv"] = tv_denoise(it["quarter"], tv_w)
        t_tv = time.perf_counter() - ts
        ts = time.perf_counter()
        res["bm3d"] = bm3d_denoise(it["quarter"], bm_s)
        t_bm = time.perf_counter() - ts
        for k in args.models:
            res[k] = model_denoise(sessions[k], it["quarter"])
        group = "acrin" if it["name"].startswith("acrin") else it["kind"] if it["kind"] == "synthetic" else "other"
        row = {"slice": it["name"], "kind": it["kind"], "group": group, "size": list(it["ref"].shape),
               "seconds": {"tv": round(t_tv, 2), "bm3d": round(t_bm, 2)}}
        for mth in methods:
            e = to_eval(res[mth])
            row[mth] = {"psnr": round(psnr(ref, e), 3), "ssim": round(ssim(ref, e), 4)}
        rows.append(row)
        outputs[it["name"]] = res
        log(f"{it['name']}: " + ", ".join(f"{m} {row[m]['psnr']:.2f}/{row[m]['ssim']:.3f}" for m in methods))
    metrics["per_slice"] = rows
    summary = {}
    for group, sel in (("ACRIN real", lambda r: r["group"] == "acrin"),
                       ("synthetic", lambda r: r["group"] == "synthetic"),
                       ("both", lambda r: r["group"] in ("acrin", "synthetic"))):
        rs = [r for r in rows if sel(r)]
        if not rs:
            continue
        summary[group] = {"slices": len(rs)}
        for mth in methods:
            summary[group][mth] = {k: round(float(np.mean([r[mth][k] for r in rs])), 3 if k == "psnr" else 4)
                                   for k in ("psnr", "ssim")}
    metrics["summary"] = summary

    # Speed: one 512 x 512 slice through ONNX Runtime on 1 thread (median of 3), and with 2.
    speed = {}
    for k in args.models:
        s1 = time_model(k, 1, reps=1 if k == "full" else 3)
        speed[k] = {"seconds_per_512_slice_1_thread": round(s1, 3),
                    "extrapolated_300_slices_2_cores_minutes": round(300 * s1 / 2 / 60, 2)}
        log(f"{k}: {s1:.3f} s per 512x512 slice on 1 thread -> 300 slices on 2 cores ~{300 * s1 / 2 / 60:.1f} min")
    metrics["speed"] = speed

    # Lucent's own pipeline on the real ACRIN series (fast model): `lucent read --derived`.
    metrics["lucent"] = lucent_check(args, sessions) if "fast" in args.models else None

    make_figure(test, outputs, args)
    (MODEL_DIR / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    record_time(WORK, "evaluate", time.time() - t0)
    log(f"wrote {MODEL_DIR / 'metrics.json'}")


def lucent_check(args, sessions):
    """Denoise the whole ACRIN series with `lucent read --model <fast> --derived DIR`, time it,
    and compare a few derived slices with Python preprocessing + ONNX Runtime."""
    import pydicom

    src = real_data("ct-acrin-chest", "*.dcm")
    if src is None or args.skip_lucent:
        return {"measured": False, "why": "no ../shared/data/ct-acrin-chest" if src is None else "--skip-lucent"}
    exe = lucent_bin(log)
    out = WORK / "lucent-derived"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "LUCENT_MODELS": str(MODEL_DIR.parent)}
    ts = time.time()
    proc = subprocess.run([exe, "read", str(src), "--model", MODELS["fast"]["id"], "--derived", str(out),
                           "--json", str(WORK / "lucent-read.json")], env=env, capture_output=True, text=True)
    secs = time.time() - ts
    (WORK / "lucent-read.log").write_text(proc.stdout + "\n" + proc.stderr)
    files = sorted(glob.glob(str(out / "**" / "*.dcm"), recursive=True))
    if proc.returncode != 0 or not files:
        log(f"lucent read failed ({proc.returncode}); see {WORK / 'lucent-read.log'}")
        return {"measured": False, "why": f"lucent read exited {proc.returncode} with {len(files)} files",
                "stderr_tail": proc.stderr[-800:]}
    acrin = {name: hu for _, hu, _, name in acrin_slices()}
    by_z = {}
    for _, hu, _, name in acrin_slices():
        d = pydicom.dcmread(WORK / "acrin-raw" / name, stop_before_pixels=True)
        by_z[round(float(d.ImagePositionPatient[2]), 2)] = name
    diffs = []
    for f in files[:: max(len(files) // 5, 1)]:
        d = pydicom.dcmread(f)
        z = round(float(d.ImagePositionPatient[2]), 2)
        if z not in by_z:
            continue
        lucent_hu = d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
        hu = acrin[by_z[z]]
        py = model_denoise(sessions["fast"], hu)
        inside = hu > -1024.5
        diffs.append(float(np.abs(lucent_hu - py)[inside].max()))
    res = {"measured": True, "slices": len(files), "seconds": round(secs, 1),
           "max_abs_difference_hu_vs_python": round(max(diffs), 3) if diffs else None, "compared": len(diffs)}
    log(f"lucent read --derived: {len(files)} slices in {secs:.1f} s; max |Lucent - Python| {res['max_abs_difference_hu_vs_python']} HU")
    return res


def make_figure(test, outputs, args):
    from PIL import Image, ImageDraw

    kinds = [k for k in ("fast", "full") if k in args.models]
    ours = kinds[0]
    real = [it for it in test if it["kind"] == "real" and it["ref"].shape[0] >= 512]
    syn = [it for it in test if it["kind"] == "synthetic"]
    picks = ([syn[0]] if syn else []) + ([real[len(real) // 2]] if real else [])
    tile, label_h = 176, 16
    lo, hi = FIG_MIN, FIG_MAX
    cols = ["routine", "quarter", "BM3D", "TV", f"ours ({ours})"]

    def to8(hu):
        return Image.fromarray((np.clip((hu - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8))

    def region(it):
        # The central 176 x 176 pixels (mediastinum and the edge of the lungs), at full resolution.
        h, w = it["ref"].shape
        s = min(tile, h)
        y0, x0 = (h - s) // 2, (w - s) // 2
        return lambda a: np.asarray(a)[y0 : y0 + s, x0 : x0 + s]

    rows = []
    for it in picks:
        r = region(it)
        res = outputs[it["name"]]
        rows.append((it["name"], [r(it["ref"]), r(res["quarter"]), r(res["bm3d"]), r(res["tv"]), r(res[ours])]))
    # The real series as acquired (no simulated noise), denoised by the fast model.
    acrin = acrin_slices() if real else []
    if acrin:
        hu = acrin[ACRIN_TEST[1] if not args.quick else len(acrin) // 2][1]
        sess = ort_session(ours, args.threads)
        r = region({"ref": hu})
        rows.append(("ACRIN as acquired (19 mAs), no reference", [None, r(hu), None, None, r(model_denoise(sess, hu))]))
    W, H = tile * 5, (tile + label_h) * len(rows) + label_h
    fig = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(fig)
    for c, name in enumerate(cols):
        draw.text((c * tile + 4, 2), name, fill=255)
    for ri, (name, panels) in enumerate(rows):
        y = label_h + ri * (tile + label_h)
        draw.text((4, y + 2), name, fill=200)
        for c, p in enumerate(panels):
            if p is None:
                continue
            im = to8(p)
            fig.paste(im, (c * tile, y + label_h))
    path = MODEL_DIR / "figure.png"
    fig.save(path, optimize=True)
    log(f"wrote {path} ({path.stat().st_size} bytes)")


# ---------------------------------------------------------------------------------------------
# card


def step_card(args):
    m = json.loads((MODEL_DIR / "metrics.json").read_text())
    timings = json.loads((WORK / "timings.json").read_text()) if (WORK / "timings.json").exists() else {}
    d = m["data"]
    kinds = [k for k in ("fast", "full") if k in m]
    methods = ["quarter", "tv", "bm3d"] + kinds
    names = {"quarter": "quarter-dose input", "tv": f"total variation (weight {m['tv_weight']})",
             "bm3d": f"BM3D (sigma {m['bm3d_sigma']})", "fast": "ours, fast", "full": "ours, full"}
    table = ["| method | " + " | ".join(f"{g} PSNR dB | {g} SSIM" for g in m["summary"]) + " |",
             "|---|" + "---:|---:|" * len(m["summary"])]
    for mth in methods:
        cells = []
        for g in m["summary"]:
            s = m["summary"][g][mth]
            cells += [f"{s['psnr']:.2f}", f"{s['ssim']:.3f}"]
        table.append(f"| {names[mth]} | " + " | ".join(cells) + " |")
    verdict = verdict_text(m, kinds)
    groups = ", ".join(f"{g}: {m['summary'][g]['slices']} slices" for g in m["summary"])
    per = ["| slice | " + " | ".join(names[x] for x in methods) + " |", "|---|" + "---:|" * len(methods)]
    for r in m["per_slice"]:
        per.append(f"| {r['slice']} ({r['size'][0]}x{r['size'][1]}) | "
                   + " | ".join(f"{r[x]['psnr']:.2f} / {r[x]['ssim']:.3f}" for x in methods) + " |")
    speed = []
    for k in kinds:
        s = m["speed"][k]
        speed.append(f"| {m[k]['id']} | {m[k]['parameters']:,} | {m[k]['bytes']:,} | "
                     f"{s['seconds_per_512_slice_1_thread']:.3f} | {s['extrapolated_300_slices_2_cores_minutes']:.1f} |")
    train_lines = []
    for k in kinds:
        t = m[k]["train"]
        h = m[k]["history"]
        train_lines.append(
            f"* **{k}** (`{m[k]['id']}`): {t['channels']} channels, {t['blocks']} residual modules"
            f"{' on the half-resolution grid' if t.get('shuffle', 1) > 1 else ''}, "
            f"{m[k]['parameters']:,} parameters; {t['steps']} steps x {t['batch']} patches of {t['patch']}x{t['patch']}, "
            f"Adam with a one-cycle schedule (peak {t['lr']}), L1 loss; validation PSNR (central 192 x 192 of the "
            f"validation slices) {h[0]['val_psnr']:.2f} dB at step 0 (the near-identity initialisation) -> "
            f"{h[-1]['val_psnr']:.2f} dB at the end; "
            f"{timings.get('train_' + k, '?')} s of training on {t.get('threads', 1)} thread(s).")
    lu = m.get("lucent") or {}
    if lu.get("measured"):
        lucent_line = (f"Lucent's own pipeline (`lucent read <ACRIN series> --model {m['fast']['id']} --derived DIR`, "
                       f"which runs `inference::ct::denoise` in batches of 8 slices) denoised all {lu['slices']} slices of "
                       f"the real ACRIN series in {lu['seconds']} s on this machine (2 cores shared with other builds), "
                       f"DICOM loading and writing included; its output differs from Python preprocessing + ONNX Runtime "
                       f"by at most {lu['max_abs_difference_hu_vs_python']} HU on {lu['compared']} compared slices "
                       f"(the derived series is stored as integers).")
    else:
        lucent_line = f"Lucent's own pipeline was not run here ({lu.get('why', 'not measured')})."
    full_note = ""
    if "full" in kinds:
        full_note = (f"\n**The full model is under-trained.** It has {m['full']['parameters']:,} parameters and was trained for only "
                     f"{m['full']['train']['steps']} steps on {m['full']['train'].get('threads', 1)} CPU thread(s) (the time budget of this project's 2-core machine); "
                     "its numbers below say what that much training gives, not what the design can do. It is meant to be "
                     "retrained on a GPU (`--full-steps`), where its 128 channels are affordable; on a CPU it is also "
                     "too slow for whole volumes (see the timings). Its manifest therefore says `run_by_default = false`: "
                     "Lucent runs it only when asked for by id (`lucent read --model lucent-ldct-denoise-full`); the fast "
                     "model is the one the workstation runs.\n")
    noise = d.get("noise_sd_check", [])
    text = f"""# Lucent low-dose CT denoisers (`lucent-ldct-denoise-fast`, `lucent-ldct-denoise-full`)

Card version {m['version']}: {', '.join(f"`{m[k]['id']}` {MODELS[k]['version']}" for k in kinds)}. **Research and demonstration only; not for diagnosis.** Generated by
`models/training/ldct_denoise.py card` from `metrics.json`: every number here was measured by that
script.

![routine / quarter / BM3D / TV / ours](figure.png)

*Figure: held-out slices, display window [{FIG_MIN:.0f}, {FIG_MAX:.0f}] HU (soft tissue, where noise shows), the
central 176 x 176 pixels at full resolution. Rows: a synthetic phantom, a real ACRIN slice with simulated quarter dose, and the ACRIN
series as acquired (itself low dose, no reference) denoised by the fast model.*

## What it is

A slice-by-slice CT denoiser in two sizes of one design (after the residual CNNs of the low-dose CT
literature): a 3x3 convolution + ReLU, residual modules of (3x3 conv + batch norm + ReLU, 3x3 conv + batch
norm, identity skip, ReLU), and a 3x3 convolution that predicts the noise, which is subtracted from the
input (residual learning). Batch norm is folded into the convolutions at export. The fast size runs the
same modules on a half-resolution grid, as FFDNet does: each 2 x 2 block of pixels becomes 4 input channels
(pixel unshuffle) and the 4 output channels go back to the full grid (pixel shuffle), so a 3x3 layer costs a
quarter as much and sees twice as far (a receptive field of 42 pixels, 29 mm at 0.7 mm pixels, against 17
pixels for the same layers at full resolution); an odd height or width is padded by one replicated row or
column inside the graph and cropped off again. The ONNX graphs hold only Conv, Relu, Add, Sub and, in the
fast one, the reshapes of the (un)shuffle and that pad and crop.
{full_note}
* Input `ct` [N, 1, H, W] (any size; Lucent feeds whole 512 x 512 slices); output `denoised`, same shape,
  in the same units.
* Preprocessing (declared in the manifest, done by Lucent's `inference/src/ct.rs`): HU clamped to
  [{m['model_window_hu'][0]:.0f}, {m['model_window_hu'][1]:.0f}], mapped to [0, 1], then (x - {NORM_MEAN}) / {NORM_STD}
  (about HU / 512 around water); the output goes back to HU by the inverse map, and voxels outside the
  window keep their original value. Training used exactly this mapping.
* ONNX opset 17, dynamic batch, height and width; sha256 in each manifest.

## How it was trained

Pairs of (quarter dose, full dose) slices simulated in the projection domain with scikit-image:
HU -> linear attenuation (mu = {d['mu_water_per_mm']}/mm x (1 + HU/1000)), parallel-beam forward projection
({d['views']} views over 180 degrees), and filtered back-projection with a Hann-apodised ramp filter.

* **Real slices**: {d['train_real']} training slices (every third slice outside a held-out block) of one
  real chest CT: TCIA ACRIN-NSCLC-FDG-PET, patient 042, the CT of a PET/CT (GE Discovery ST, 140 kVp,
  **19 mAs**, soft-tissue kernel, 512 x 512, 0.98 mm pixels), in `../shared/data/ct-acrin-chest`
  (never copied into the repository). The quarter dose is the slice plus the noise that removing 75 % of
  its dose adds: post-log Gaussian noise with the variance of Poisson + electronic noise (Yu et al., Med
  Phys 2012) at the incident photon count that reproduces the series' own noise (I0 = {d['i0_real']:.3g}
  per ray and view, calibrated on {d['calibration_slices']} slices whose high-pass noise SD in soft tissue is
  {d.get('acrin_noise_sd_hu')} HU), back-projected and added. **This series is itself a low-dose scan: its
  "full-dose" reference already contains noise** (the model learns to remove only the added part on these
  slices), and one patient on one scanner is very little data.
* **Synthetic slices**: {d['train_synthetic']} chest phantoms drawn by the script (ellipses: body, fat, muscle, lungs
  with texture, heart, aorta, spine, ribs, lung vessels, solid / part-solid / ground-glass nodules, table;
  0.9 mm pixels), forward-projected, with Poisson counts + Gaussian electronic noise (sigma {d['sigma_e_counts']} counts)
  at I0 = {d['i0_synthetic']:.3g} (routine) and a quarter of it, log, FBP: both doses are real reconstructions of noisy
  sinograms.
* Every training slice has a random dose scale (0.5x to 2x the nominal I0) so the model sees a range of
  noise levels. Noise check on validation/test slices, (routine, quarter) noise SD in soft tissue, HU:
  {noise}.
* Patches (mostly inside the body), random flips and 90-degree rotations, L1 loss in model units,
  seed {SEED}, deterministic algorithms, on this project's 2-core CPU (PyTorch 2.5.1):

{chr(10).join(train_lines)}

## How well it works (held-out slices)

Held out: ACRIN slices {ACRIN_TEST} (z order; a block of slices around them was excluded from training, two
of its slices were validation), pydicom's `CT_small.dcm` (another scanner, 128 x 128, 0.66 mm pixels: a small
field of view, so the noise simulated by projecting it is far weaker than a whole chest would get; it is listed
per slice but left out of the means), and {sum(1 for r in m['per_slice'] if r['kind'] == 'synthetic')} synthetic phantoms from a separate seed. PSNR and SSIM (scikit-image,
7 x 7 window) over the whole slice with HU clipped to [{m['eval_window_hu'][0]:.0f}, {m['eval_window_hu'][1]:.0f}] and mapped to
[0, 1], against the full-dose reference (routine dose for synthetic slices, the acquired slice for real ones).
Total variation (`skimage.restoration.denoise_tv_chambolle`) and BM3D (`bm3d` {bm3d_version()},
`sigma_psd` in the same [0, 1] units) work on that windowed image, with their parameter chosen for the best
mean PSNR on central 256 x 256 crops of the {len(m.get('tv_validation_psnr', {})) and 4} validation slices (TV weights
{m['tv_validation_psnr']}; BM3D sigmas {m['bm3d_validation_psnr']}). Means ({groups}):

{chr(10).join(table)}

{verdict}

Per slice (PSNR dB / SSIM):

{chr(10).join(per)}

{ci_set_text(m)}
## Speed

ONNX Runtime {ort_version()}, CPU, one 512 x 512 slice, median of the measured runs, on this project's
2-core machine while other builds may have been running; the 300-slice figure is 300 x that time / 2 (one
slice per core):

| model | parameters | file bytes | s per slice, 1 thread | 300 slices on 2 cores, min |
|---|---:|---:|---:|---:|
{chr(10).join(speed)}

{lucent_line}

## Limits

* Trained on simulated noise (parallel-beam geometry, a Hann-apodised ramp filter, white detector noise),
  not on paired real low-dose / routine-dose scans; the texture of a real scanner's noise (fan/helical
  geometry, its own kernels, iterative reconstruction) differs, and the model has seen one real patient.
* A CNN trained with L1 loss smooths: fine texture, small low-contrast lesions and ground-glass may be
  blurred, and anything it outputs can look plausible while being wrong. Always compare with the original
  series, which Lucent keeps; the denoised series is a derived series labelled with the model and version.
* On the ACRIN series as acquired (figure, last row) the fast model removes most of the noise and visibly
  flattens soft-tissue texture: the result looks smoother and more "plastic" than a routine-dose scan.
* PSNR / SSIM against a reference that is itself noisy (the real slices) cap what can be measured.
* No reader study; no claim of diagnostic equivalence at any dose.

## Data and licences

ACRIN-NSCLC-FDG-PET (ACRIN 6668): TCIA, CC BY 3.0, DOI 10.7937/tcia.2019.30ilqfcl; Clark et al., J Digit
Imaging 2013. `CT_small.dcm` is one of pydicom's test files (read from `target/lucent-data`, not copied). Model weights:
MIT OR Apache-2.0.

sha256: {', '.join(f"`{onnx_name(k)}` `{m[k]['sha256']}`" for k in kinds)}.
"""
    (MODEL_DIR / "MODEL_CARD.md").write_text(text)
    log(f"wrote {MODEL_DIR / 'MODEL_CARD.md'}")


def read_series_hu(folder):
    """A `lucent synth-ct` series (CT0001.dcm ...) as HU, in slice order."""
    import pydicom

    out = []
    for f in sorted(Path(folder).glob("CT*.dcm")):
        ds = pydicom.dcmread(f)
        out.append(ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    return out


def step_ci(args):
    """`lucent synth-ct --kind dose-pairs` (Lucent's own phantom, its own projector) evaluated by `lucent eval`
    (the figures CI re-checks), and the same slices through the quarter-dose input, TV, BM3D and Python ONNX
    Runtime for the comparison table and as a cross-check of Lucent's numbers."""
    from common import lucent_ci_eval, record_ci_set

    m = json.loads((MODEL_DIR / "metrics.json").read_text())
    kinds = [k for k in ("fast", "full") if k in m]
    ids = [MODELS[k]["id"] for k in kinds]
    data, reports, seconds = lucent_ci_eval(WORK, "dose-pairs", CI_SEED, CI_COUNT, ids, args.threads, log)
    sessions = {k: ort_session(k, args.threads) for k in kinds}
    rows = []
    for line in (data / "pairs.csv").read_text().splitlines()[1:]:
        low, ref = line.split(",")[:2]
        for z, (q, r) in enumerate(zip(read_series_hu(data / low), read_series_hu(data / ref))):
            res = {"quarter": q, "tv": tv_denoise(q, m["tv_weight"]), "bm3d": bm3d_denoise(q, m["bm3d_sigma"])}
            for k in kinds:
                res[k] = model_denoise(sessions[k], q)
            e = to_eval(r)
            row = {"case": low, "slice": z}
            for mth, hu in res.items():
                row[mth] = {"psnr": psnr(e, to_eval(hu)), "ssim": ssim(e, to_eval(hu))}
            rows.append(row)
            log(f"CI {low} {z}: " + ", ".join(f"{k} {v['psnr']:.2f}/{v['ssim']:.3f}" for k, v in row.items()
                                              if isinstance(v, dict)))
    python = {mth: {k: round(float(np.mean([r[mth][k] for r in rows])), 4) for k in ("psnr", "ssim")}
              for mth in ["quarter", "tv", "bm3d"] + kinds}
    lucent = {}
    for k, i in zip(kinds, ids):
        d = reports[i]["denoise"]
        lucent[k] = {"input": d["input"], "output": d["output"], "slices": d["slices"], "pairs": d["pairs"]}
    record_ci_set(MODEL_DIR / "metrics.json", {"kind": "dose-pairs", "seed": CI_SEED, "count": CI_COUNT,
                                               "seconds": seconds, "slices": len(rows), "python": python,
                                               "lucent": lucent}, log)


def ci_set_text(m):
    c = m.get("lucent_ci_set")
    if not c:
        return "The CI set was not measured (run `ldct_denoise.py ci`)."
    kinds = [k for k in ("fast", "full") if k in c["lucent"]]
    names = {"quarter": "quarter-dose input", "tv": f"total variation (weight {m['tv_weight']})",
             "bm3d": f"BM3D (sigma {m['bm3d_sigma']})", "fast": "ours, fast", "full": "ours, full"}
    py = c["python"]
    table = ["| method | PSNR dB | SSIM | by |", "|---|---:|---:|---|"]
    for mth in ["quarter", "tv", "bm3d"]:
        table.append(f"| {names[mth]} | {py[mth]['psnr']:.2f} | {py[mth]['ssim']:.3f} | Python |")
    for k in kinds:
        lu = c["lucent"][k]["output"]
        table.append(f"| {names[k]} | {lu['psnr_db']:.2f} | {lu['ssim']:.3f} | `lucent eval` |")
    li = c["lucent"][kinds[0]]["input"]
    diffs = ", ".join(f"{k} {abs(c['lucent'][k]['output']['psnr_db'] - py[k]['psnr']):.3f} dB" for k in kinds)
    return f"""### The set CI re-checks: Lucent's own generator

`lucent synth-ct --kind dose-pairs --seed {c['seed']} --count {c['count']}` writes {c['count']} pairs of series
({c['slices']} slices of 512 x 512, 0.68 mm pixels, 5 mm apart) of Lucent's analytic chest phantom (`pacs::synth`),
each slice acquired twice by Lucent's own projector (`pacs::synth::dose`: parallel beam, 512 views,
Poisson + electronic noise, a smoothed Ram-Lak filter): at routine dose and at a quarter of it. `lucent eval`
denoises the quarter-dose series through the workstation's pipeline and measures the slices against the
routine-dose ones (same window and SSIM as above); `app/tests/eval.rs` regenerates the set and requires these
numbers. TV and BM3D (the parameters chosen above) were run by this script on the same slices, which also
checked Lucent's figures with Python ONNX Runtime (PSNR difference: {diffs}). The phantom is piecewise
constant, which suits TV and BM3D; it is a different noise texture from the training data's.

| method | PSNR dB | SSIM | measured by |
|---|---:|---:|---|
| quarter-dose input (`lucent eval`) | {li['psnr_db']:.2f} | {li['ssim']:.3f} | `lucent eval` |
""" + "\n".join(table[2:]) + "\n"


def verdict_text(m, kinds):
    """One plain sentence per group comparing the fast model with BM3D and TV, from the numbers."""
    if "fast" not in kinds:
        return ""
    out = []
    for g, s in m["summary"].items():
        if g == "both":
            continue
        f, b, t = s["fast"], s["bm3d"], s["tv"]
        out.append(
            f"On the {g} slices the fast model is {abs(f['psnr'] - b['psnr']):.2f} dB "
            f"{'above' if f['psnr'] >= b['psnr'] else 'below'} BM3D in PSNR and "
            f"{abs(f['ssim'] - b['ssim']):.3f} {'above' if f['ssim'] >= b['ssim'] else 'below'} it in SSIM, "
            f"and {f['psnr'] - t['psnr']:+.2f} dB / {f['ssim'] - t['ssim']:+.3f} against TV.")
    sp = m["speed"]["fast"]["seconds_per_512_slice_1_thread"]
    bm = [r["seconds"]["bm3d"] for r in m["per_slice"] if r["size"][0] >= 512]
    if bm:
        out.append(f"BM3D took {np.median(bm):.1f} s per 512 x 512 slice here (median, one process) against "
                   f"{sp:.2f} s for the fast model.")
    return " ".join(out)


def bm3d_version():
    try:
        from importlib.metadata import version

        return version("bm3d")
    except Exception:
        return "?"


def ort_version():
    import onnxruntime

    return onnxruntime.__version__


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["all", "data", "train", "export", "evaluate", "ci", "card"])
    p.add_argument("--threads", type=int, default=1, help="PyTorch / ONNX Runtime threads (default 1)")
    p.add_argument("--models", default="fast,full", help="which sizes (default fast,full)")
    p.add_argument("--fast-steps", type=int, default=0, help=f"training steps, fast (default {MODELS['fast']['steps']})")
    p.add_argument("--full-steps", type=int, default=0, help=f"training steps, full (default {MODELS['full']['steps']})")
    p.add_argument("--skip-lucent", action="store_true", help="do not run `lucent read` in evaluate")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: a few slices, 20 steps, everything under target/lucent-data/ldct-training-quick")
    args = p.parse_args()
    args.models = [k.strip() for k in args.models.split(",") if k.strip()]
    if args.quick:
        global WORK, MODEL_DIR
        WORK = ROOT / "target" / "lucent-data" / "ldct-training-quick"
        MODEL_DIR = WORK / "models" / "lucent-ldct-denoise"
    WORK.mkdir(parents=True, exist_ok=True)
    steps = {"data": step_data, "train": step_train, "export": step_export, "evaluate": step_evaluate,
             "ci": step_ci, "card": step_card}
    order = list(steps) if args.step == "all" else [args.step]
    for name in order:
        log(f"step {name}")
        steps[name](args)


if __name__ == "__main__":
    main()
