#!/usr/bin/env python3
"""Train, export, evaluate and document Lucent's low-dose chest CT nodule detector (`lucent-ldct-nodule`).

    target/lucent-data/venv-train/bin/python models/training/ldct_nodule.py all

`all` runs the steps below in order; each can also run alone (they read what the previous one wrote
under target/lucent-data/ldct-nodule-training/):

  data      make training / validation patches: 32^3 windows at 2 mm, resampled exactly as Lucent
            does (inference/src/ct.rs `detect`: point-sampled trilinear from the native grid, HU
            window -1000..400 to [0, 1]), from procedural chests (a numpy port of
            pacs::synth::chest_phantom_hu with per-case variation and branching tubular vessels) and
            from the real ACRIN low-dose CT (patient-left lung only; the right lung is held out), with
            synthetic solid, part-solid and ground-glass nodules (3-30 mm, lobulated ellipsoids; free,
            juxtapleural and juxtavascular) inserted at native resolution
  train     train a small 3-D U-Net (per-voxel nodule probability) with a fixed seed on 1 thread
  export    write models/lucent-ldct-nodule/lucent-ldct-nodule.onnx (opset 17, dynamic batch),
            checked against torch with ONNX Runtime
  evaluate  write held-out scans as DICOM (synthetic chests; copies of the ACRIN CT with nodules
            inserted in the held-out right lung), run `lucent read` on them (Lucent's own pipeline),
            match candidates to the inserted nodules, FROC + CPM, pick the operating threshold on
            validation scans, run the real ACRIN CT as it is and draw its candidates, time `lucent
            read`; writes the manifest and metrics.json
  ci        `lucent synth-ct --kind nodules` (6 scans of Lucent's own phantom) and `lucent eval` with the
            shipped manifest: the FROC figures CI re-checks (app/tests/eval.rs), into metrics.json
  card      write models/lucent-ldct-nodule/MODEL_CARD.md from metrics.json

Nothing here downloads anything; the real CT is read from ../shared/data/ct-acrin-chest (or
$LUCENT_REAL_DATA/ct-acrin-chest), decoded with DCMTK's dcmdjpls into the working folder, and never
copied into the repository.
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, auroc, fmt, lucent_bin, real_data, record_time  # noqa: E402


WORK = ROOT / "target" / "lucent-data" / "ldct-nodule-training"
MODEL_DIR = ROOT / "models" / "lucent-ldct-nodule"
MODEL_ID = "lucent-ldct-nodule"
VERSION = "0.1.0"
ONNX_NAME = "lucent-ldct-nodule.onnx"

SPACING = 2.0  # model grid, mm, isotropic
WIN = 32  # window, voxels per axis
OVERLAP = 0.25
HU_MIN, HU_MAX = -1000.0, 400.0
SEED = 0
EPOCHS = 3
BATCH = 8
N_TRAIN = 7200  # patches
N_VAL_PATCHES = 400
# Held-out scans for the evaluation (whole volumes, written as DICOM and read by Lucent).
N_VAL_SCANS = 8  # synthetic, used only to choose the operating threshold
N_TEST_SCANS = 30  # synthetic, FROC
N_ACRIN_TEST = 3  # ACRIN copies with nodules inserted in the right lung, FROC
EVAL_THRESHOLD = 0.15  # candidate level while measuring FROC (the manifest's is chosen on validation)
# A lower candidate level, measured too: Lucent's regions grow and merge as the level drops, so the
# FROC depends on it (reported in the card).
EVAL_THRESHOLD_LOW = 0.05
EVAL_MAX_CANDIDATES = 100
MAX_CANDIDATES = 20
# Lucent keeps only candidates within this many mm (in-plane) of the lungs (inference::ct::lung_region).
LUNG_REGION_MM = 8.0
NMS_IOU = 0.1
MIN_SIZE_MM = 3.0
FROC_RATES = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
# The set Lucent generates and evaluates itself (`lucent synth-ct --kind nodules`), re-checked by CI.
CI_SEED, CI_COUNT = "lucent-ldct-nodule-ci", 6
OPERATING_FP_PER_SCAN = 1.0  # the manifest threshold gives about this many FPs per synthetic scan
HIT_MIN_MM = 3.0  # a candidate hits a nodule when its centre is within max(radius, 3 mm)
KINDS = ["solid", "part_solid", "ground_glass"]
PLACEMENTS = ["free", "juxtapleural", "juxtavascular"]
SIZE_BANDS = [(3, 6), (6, 10), (10, 20), (20, 30.01)]


def log(msg):
    print(f"[ldct-nodule {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def acrin_dir():
    return real_data("ct-acrin-chest", "*.dcm")


def to_unit(hu):
    return ((np.clip(hu, HU_MIN, HU_MAX) - HU_MIN) / (HU_MAX - HU_MIN)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Procedural chest (numpy port of pacs::synth::chest_phantom_hu, with per-case variation)


def random_case(rng):
    """Parameters of one synthetic chest; `default_case()` reproduces Lucent's generator."""
    s = rng.uniform(0.85, 1.15)
    sl = s * rng.uniform(0.9, 1.1)
    return {
        "ax": 165.0 * s, "ay": 115.0 * s * rng.uniform(0.9, 1.1), "lung_cx": 72.0 * s,
        "lx": 58.0 * sl, "ly": 82.0 * sl, "lung_hu": rng.uniform(-890.0, -800.0),
        "sheet_n": float(rng.integers(5, 10)), "sheet_w": rng.uniform(0.03, 0.07), "sheet_phase": rng.uniform(0, 6.3),
        "noise": rng.uniform(8.0, 45.0), "noise_blur": rng.uniform(0.0, 1.0),
        "vessels": vessel_tree(rng, s), "z_shift": rng.uniform(-15.0, 15.0),
    }


def default_case():
    return {"ax": 165.0, "ay": 115.0, "lung_cx": 72.0, "lx": 58.0, "ly": 82.0, "lung_hu": -860.0,
            "sheet_n": 7.0, "sheet_w": 0.045, "sheet_phase": 0.0, "noise": 12.0, "noise_blur": 0.0,
            "vessels": [], "z_shift": 0.0}


def vessel_tree(rng, s):
    """Branching tubes from each hilum: segments (a, b, radius_mm, hu)."""
    segs = []
    for side in (-1.0, 1.0):
        hilum = np.array([side * 45.0 * s, -5.0, -150.0])
        stack = [(hilum, None, 4.5, 0)]
        while stack:
            p, d0, r, depth = stack.pop()
            for _ in range(2 if depth else 3):
                d = rng.normal(size=3)
                if d0 is not None:
                    d = d0 * 1.2 + d * 0.8
                else:
                    d[0] = side * abs(d[0]) + side * 0.6
                d /= np.linalg.norm(d)
                length = rng.uniform(18.0, 45.0) * (0.85 ** depth)
                q = p + d * length
                segs.append((p, q, r, rng.uniform(25.0, 70.0)))
                if depth < 4 and r > 0.9:
                    stack.append((q, d, r * rng.uniform(0.6, 0.8), depth + 1))
    return segs


def lung_masks(x, y, z, c):
    """(inside lung 0/1 per side combined, right-lung flag) for points in patient mm."""
    zz = z - c["z_shift"]
    taper = np.where(zz > -40.0, np.clip(1.0 - (zz + 40.0) / 80.0, 0.55, 1.0), 1.0)
    lung_z = (zz + 260.0) / 260.0
    scale = np.maximum(1.0 - np.maximum(lung_z - 0.35, 0.0) ** 2 * 1.6, 0.15)
    inside = np.zeros(x.shape, bool)
    for side in (-1.0, 1.0):
        lx, ly = c["lx"] * scale, c["ly"] * scale
        dome = 0.0 if side > 0 else 0.06
        inside |= (((x - side * c["lung_cx"]) / lx) ** 2 + (y / ly) ** 2 < 1.0) & (lung_z > 0.05 + dome) & (lung_z < 1.0)
    return inside, taper, scale


def phantom_hu(x, y, z, c, axes=None):
    """HU at patient points (LPS mm); first match wins as in the Rust generator, so regions are
    painted from the lowest precedence up. `axes` (gx, gy, gz): the points are their meshgrid
    [z, y, x], which makes the tubes fast."""
    zz = z - c["z_shift"]
    inside_lung, taper, scale = lung_masks(x, y, z, c)
    ax, ay = c["ax"] * taper, c["ay"] * np.sqrt(taper)
    out = np.full(x.shape, 40.0, np.float32)
    out[(x - 10.0) ** 2 + (y - 45.0) ** 2 < 14.0 ** 2] = 42.0
    heart = (((x - 18.0) / 55.0) ** 2 + ((y + 25.0) / 48.0) ** 2 < 1.0) & (zz > -230.0) & (zz < -120.0)
    out[heart] = 45.0
    # Lung parenchyma with the generator's vessel sheets, then tubes.
    side = np.where(x > 0, 1.0, -1.0)
    hx = x - side * 40.0
    va = np.arctan2(hx, y + 10.0) * c["sheet_n"] + zz / 35.0 + c["sheet_phase"]
    sheet = (np.abs(np.sin(va)) < c["sheet_w"]) & (np.sqrt(hx ** 2 + (y + 10.0) ** 2) < 70.0 * scale)
    lung_val = np.where(sheet, 35.0, c["lung_hu"] + 40.0 * (y / 100.0)).astype(np.float32)
    out[inside_lung] = lung_val[inside_lung]
    if c["vessels"]:
        vessel_hu = tubes_grid(*axes, c["vessels"]) if axes is not None else tubes(x, y, z, c["vessels"])
        m = inside_lung & ~np.isnan(vessel_hu)
        out[m] = vessel_hu[m]
    fat = (x / (ax - 12.0)) ** 2 + ((y - 5.0) / (ay - 12.0)) ** 2 > 1.0
    out[fat] = -95.0
    angle = np.arctan2(y, x)
    ring = (x / (ax - 20.0)) ** 2 + ((y - 5.0) / (ay - 20.0)) ** 2
    ribs = (ring >= 0.86) & (ring < 1.0) & (np.mod(zz / 22.0 + angle * 0.8, 1.0) < 0.35) & (y > -90.0)
    out[ribs] = 650.0
    spine = np.sqrt(x ** 2 + (y - 78.0) ** 2)
    out[spine < 17.0] = 280.0
    out[(spine < 17.0) & (spine > 14.5)] = 900.0
    out[spine < 5.5] = 20.0
    out[(x / ax) ** 2 + ((y - 5.0) / ay) ** 2 > 1.0] = -1000.0
    return out


def tubes(x, y, z, segs):
    """HU of the tube a point lies in (partial volume ignored), NaN outside every tube."""
    out = np.full(x.shape, np.nan, np.float32)
    pts = np.stack([x, y, z], -1)
    lo, hi = pts.reshape(-1, 3).min(0), pts.reshape(-1, 3).max(0)
    for a, b, r, hu in segs:
        if np.any(np.minimum(a, b) - r > hi) or np.any(np.maximum(a, b) + r < lo):
            continue
        ab = b - a
        t = np.clip(((pts - a) @ ab) / (ab @ ab), 0.0, 1.0)
        d2 = ((pts - a - t[..., None] * ab) ** 2).sum(-1)
        out[d2 <= r * r] = hu
    return out


def tubes_grid(gx, gy, gz, segs):
    """`tubes` on the meshgrid [z, y, x] of ascending axes, one bounding box at a time."""
    out = np.full((len(gz), len(gy), len(gx)), np.nan, np.float32)
    for a, b, r, hu in segs:
        lo, hi = np.minimum(a, b) - r, np.maximum(a, b) + r
        sl = [slice(np.searchsorted(g, lo[i]), np.searchsorted(g, hi[i], side="right")) for i, g in enumerate((gx, gy, gz))]
        if any(s.stop <= s.start for s in sl):
            continue
        pz, py, px = np.meshgrid(gz[sl[2]], gy[sl[1]], gx[sl[0]], indexing="ij")
        pts = np.stack([px, py, pz], -1)
        ab = b - a
        t = np.clip(((pts - a) @ ab) / (ab @ ab), 0.0, 1.0)
        d2 = ((pts - a - t[..., None] * ab) ** 2).sum(-1)
        blk = out[sl[2], sl[1], sl[0]]
        blk[d2 <= r * r] = hu
    return out


def vessel_points(segs, rng, n):
    """Random points on tube axes, with their radius."""
    out = []
    for _ in range(n):
        a, b, r, _ = segs[rng.integers(len(segs))]
        out.append((a + rng.uniform() * (b - a), r))
    return out


# ---------------------------------------------------------------------------------------------
# Nodules


def random_nodule(rng, diameter=None, kind=None):
    d = diameter if diameter is not None else float(np.exp(rng.uniform(math.log(3.0), math.log(30.0))))
    kind = kind or rng.choice(KINDS, p=[0.5, 0.2, 0.3])
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    nod = {
        "diameter_mm": d, "kind": str(kind), "axes": q.tolist(), "elong": rng.uniform(0.8, 1.2, 3).tolist(),
        "lob_dirs": [list(v / np.linalg.norm(v)) for v in rng.normal(size=(3, 3))],
        "lob": float(rng.uniform(0.0, 0.18)), "lob_sign": rng.choice([-1.0, 1.0], 3).tolist(),
        "texture": float(rng.uniform(5.0, 25.0)),
    }
    if kind == "solid":
        nod["hu"] = float(rng.uniform(-20.0, 60.0))
    elif kind == "ground_glass":
        nod["hu"] = float(rng.uniform(-720.0, -450.0))
    else:
        nod["hu"] = float(rng.uniform(-700.0, -480.0))
        nod["core_hu"] = float(rng.uniform(-10.0, 50.0))
        nod["core_frac"] = float(rng.uniform(0.3, 0.6))
    return nod


def nodule_occupancy(px, py, pz, nod, slice_mm):
    """Fraction of each native voxel inside the nodule (and inside its solid core): the nodule is
    sampled at 3 points across the slice thickness, with a one-pixel soft edge in-plane."""
    c = np.asarray(nod["center_mm"])
    rot = np.asarray(nod["axes"])
    r = nod["diameter_mm"] / 2.0
    occ = np.zeros(px.shape, np.float32)
    core = np.zeros(px.shape, np.float32)
    for dz in (-slice_mm / 3.0, 0.0, slice_mm / 3.0):
        rel = np.stack([px - c[0], py - c[1], pz + dz - c[2]], -1)
        local = rel @ rot / np.asarray(nod["elong"])
        dist = np.linalg.norm(local, axis=-1)
        unit = local / np.maximum(dist, 1e-6)[..., None]
        lob = 1.0 + nod["lob"] * sum(s * (unit @ np.asarray(u)) ** 3 for s, u in zip(nod["lob_sign"], nod["lob_dirs"]))
        edge = 0.7
        occ += np.clip((r * lob - dist) / edge + 0.5, 0.0, 1.0)
        if "core_frac" in nod:
            core += np.clip((r * nod["core_frac"] * lob - dist) / edge + 0.5, 0.0, 1.0)
    return occ / 3.0, core / 3.0


def insert_nodule(hu, px, py, pz, nod, slice_mm, noise_sd, rng):
    """Blend the nodule into `hu` in place (native grid); vessels and wall denser than the nodule
    stay visible through it; the nodule gets its own texture and the scan's noise."""
    r = nod["diameter_mm"] / 2.0 * 1.3 + slice_mm
    c = nod["center_mm"]
    box = (np.abs(px - c[0]) <= r) & (np.abs(py - c[1]) <= r) & (np.abs(pz - c[2]) <= r)
    if not box.any():
        return
    idx = np.nonzero(box)
    occ, core = nodule_occupancy(px[idx], py[idx], pz[idx], nod, slice_mm)
    val = nod["hu"] + nod["texture"] * rng.normal(size=occ.shape) + noise_sd * 0.5 * rng.normal(size=occ.shape)
    if "core_hu" in nod:
        val = val + core * (nod["core_hu"] - nod["hu"])
    bg = hu[idx]
    hu[idx] = np.maximum(bg, bg + occ * (val - bg)) if nod["kind"] != "solid" else bg + occ * (np.maximum(val, bg) - bg)


# ---------------------------------------------------------------------------------------------
# The real CT (ACRIN), decoded once


def acrin_volume():
    """HU [z, y, x] float32, with geometry: (hu, origin_mm of voxel 0, spacing [x, y, z], files in z order)."""
    cache = WORK / "acrin.npz"
    if cache.exists():
        d = np.load(cache, allow_pickle=True)
        return d["hu"], d["origin"], d["spacing"], list(d["files"])
    import pydicom

    src = acrin_dir()
    if src is None:
        return None
    raw = WORK / "acrin-raw"
    raw.mkdir(parents=True, exist_ok=True)
    slices = []
    for f in sorted(src.glob("*.dcm")):
        dst = raw / f.name
        if not dst.exists():
            subprocess.run(["dcmdjpls", str(f), str(dst)], check=True)
        d = pydicom.dcmread(dst)
        hu = d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
        slices.append((float(d.ImagePositionPatient[2]), hu, [float(v) for v in d.ImagePositionPatient],
                       [float(v) for v in d.PixelSpacing], f.name))
    slices.sort(key=lambda s: s[0])
    hu = np.stack([s[1] for s in slices]).astype(np.float32)
    zs = np.array([s[0] for s in slices])
    spacing = np.array([slices[0][3][1], slices[0][3][0], float(np.median(np.diff(zs)))])
    origin = np.array(slices[0][2])
    files = [s[4] for s in slices]
    np.savez(cache, hu=hu, origin=origin, spacing=spacing, files=np.array(files))
    return hu, origin, spacing, files


def body_lung_masks(hu):
    """Lung region (lungs with their vessels) and body, on any [z, y, x] HU grid."""
    body = ndi.binary_fill_holes(hu > -400, structure=np.ones((1, 3, 3)))
    body = ndi.binary_opening(body, iterations=2)
    air = (hu < -400) & body
    lab, n = ndi.label(air)
    if n == 0:
        return np.zeros_like(body), body
    sizes = ndi.sum(air, lab, range(1, n + 1))
    keep = np.argsort(sizes)[::-1][:2]
    lung = np.isin(lab, keep + 1) & (sizes[keep].min() > 0)
    lung = ndi.binary_closing(lung, structure=np.ones((3, 3, 3)), iterations=3)
    lung = ndi.binary_fill_holes(lung, structure=np.ones((1, 3, 3)))
    return lung, body


# ---------------------------------------------------------------------------------------------
# Patches: native grid -> nodules -> Lucent's resampling


def resample_patch(native, origin_idx_mm, native_spacing, out_origin_mm):
    """Point-sampled trilinear, as inference/src/resample.rs: value at out_origin + 2 mm * k."""
    k = np.arange(WIN) * SPACING
    coords = [(out_origin_mm[a] + k - origin_idx_mm[a]) / native_spacing[a] for a in range(3)]  # x, y, z
    zz, yy, xx = np.meshgrid(coords[2], coords[1], coords[0], indexing="ij")
    return ndi.map_coordinates(native, [zz, yy, xx], order=1, mode="nearest").astype(np.float32)


def target_patch(nodules, out_origin_mm):
    """Per-voxel target on the 2 mm grid: a soft sphere of the nodule's radius (at least 3 mm)."""
    k = np.arange(WIN) * SPACING
    zz, yy, xx = np.meshgrid(out_origin_mm[2] + k, out_origin_mm[1] + k, out_origin_mm[0] + k, indexing="ij")
    t = np.zeros((WIN, WIN, WIN), np.float32)
    for n in nodules:
        c = n["center_mm"]
        r = max(n["diameter_mm"] / 2.0, 3.0)
        d = np.sqrt((xx - c[0]) ** 2 + (yy - c[1]) ** 2 + (zz - c[2]) ** 2)
        t = np.maximum(t, np.clip((r - d) / SPACING + 0.5, 0.0, 1.0))
    return t


def place_nodules(rng, nod_list, lung_fn, edt_fn, vessel_pts, centre, half):
    """Give each nodule a centre near `centre` (within `half` mm per axis): free in the lung,
    touching the pleura, or beside a vessel. `lung_fn(p)` says whether p is in the lung region,
    `edt_fn(p)` its distance (mm) to the region's edge."""
    placed = []
    for nod in nod_list:
        r = nod["diameter_mm"] / 2.0
        placement = rng.choice(PLACEMENTS, p=[0.45, 0.3, 0.25])
        for _ in range(60):
            if placement == "juxtavascular" and vessel_pts:
                v, vr = vessel_pts[rng.integers(len(vessel_pts))]
                d = rng.normal(size=3)
                d /= np.linalg.norm(d)
                p = np.asarray(v) + d * (vr + r * rng.uniform(0.55, 0.95))
            else:
                p = np.asarray(centre) + rng.uniform(-half, half, 3)
            if np.any(np.abs(p - centre) > half) or not lung_fn(p):
                continue
            e = edt_fn(p)
            if placement == "juxtapleural":
                ok = r * 0.35 <= e <= r * 0.95 + 1.0
            else:
                ok = e >= r * 0.9 + 1.0
            if ok and all(np.linalg.norm(p - np.asarray(q["center_mm"])) > (r + q["diameter_mm"] / 2 + 4) for q in placed):
                nod["center_mm"] = [float(v) for v in p]
                nod["placement"] = str(placement)
                placed.append(nod)
                break
    return placed


def synth_sample(rng, case, want_nodules):
    """One 32^3 patch from a procedural chest: (input HU, target, nodules)."""
    for _ in range(50):
        p = np.array([rng.uniform(-150, 150), rng.uniform(-100, 100), rng.uniform(-270, -10)])
        inside, _, _ = lung_masks(p[:1], p[1:2], p[2:], case)
        if inside[0] or rng.uniform() < 0.12:
            break
    ps = rng.uniform(0.6, 1.4)
    ss = rng.choice([1.0, 1.25, 2.0, 2.5, 3.0, 3.3])
    half = WIN * SPACING / 2.0
    out_origin = p - half + rng.uniform(0, SPACING, 3)
    lo = out_origin - np.array([ps, ps, ss]) * 2
    n_native = np.ceil((WIN * SPACING + 4 * np.array([ps, ps, ss])) / np.array([ps, ps, ss])).astype(int)
    gx, gy, gz = (lo[a] + np.arange(n_native[a]) * [ps, ps, ss][a] for a in range(3))
    pz, py, px = np.meshgrid(gz, gy, gx, indexing="ij")
    hu = phantom_hu(px, py, pz, case, axes=(gx, gy, gz))
    # Lung region on a coarse grid (analytic lung without the vessels) for placement.
    margin = 16.0
    ck = np.arange(-margin, WIN * SPACING + margin, SPACING)
    cz, cy, cx = np.meshgrid(out_origin[2] + ck, out_origin[1] + ck, out_origin[0] + ck, indexing="ij")
    lungc, _, _ = lung_masks(cx, cy, cz, case)
    edt = ndi.distance_transform_edt(lungc, sampling=SPACING)
    c0 = out_origin - margin

    def cidx(q):
        i = np.round((np.asarray(q) - c0) / SPACING).astype(int)[::-1]
        return tuple(np.clip(i, 0, np.array(lungc.shape) - 1))

    nodules = []
    if want_nodules:
        k = rng.choice([1, 1, 1, 2, 3])
        vp = vessel_points([s for s in case["vessels"]], rng, 40) if case["vessels"] else []
        nodules = place_nodules(rng, [random_nodule(rng) for _ in range(k)], lambda q: bool(lungc[cidx(q)]),
                                lambda q: float(edt[cidx(q)]), vp, p, half - 2.0)
    for nod in nodules:
        insert_nodule(hu, px, py, pz, nod, ss, case["noise"], rng)
    add_noise(hu, case["noise"], case["noise_blur"], rng)
    x = resample_patch(hu, lo, [ps, ps, ss], out_origin)
    return x, target_patch(nodules, out_origin), nodules


def add_noise(hu, sd, blur, rng):
    n = rng.normal(size=hu.shape).astype(np.float32)
    if blur > 0.3:
        n = ndi.gaussian_filter(n, (0, blur, blur))
        n *= 1.0 / max(float(n.std()), 1e-6)
    hu += sd * n * (hu > -990)


class Acrin:
    """The real CT, with masks on its native grid; training uses only the patient-left half."""

    def __init__(self):
        hu, origin, spacing, files = acrin_volume()
        self.hu, self.origin, self.spacing, self.files = hu, origin, spacing, files
        self.lung, self.body = body_lung_masks(hu)
        coarse = self.lung[:, ::2, ::2]
        self.edt = ndi.distance_transform_edt(coarse, sampling=(spacing[2], spacing[1] * 2, spacing[0] * 2))
        vessels = self.lung & (hu > -300)
        self.vessel_vox = np.argwhere(vessels)
        self.lung_vox = np.argwhere(self.lung)
        self.body_vox = np.argwhere(self.body[:, ::4, ::4]) * [1, 4, 4]

    def mm(self, idx_zyx):
        return self.origin + np.asarray(idx_zyx)[::-1] * self.spacing

    def idx(self, p):
        i = np.round((np.asarray(p) - self.origin) / self.spacing).astype(int)[::-1]
        return tuple(np.clip(i, 0, np.array(self.hu.shape) - 1))

    def in_lung(self, p):
        return bool(self.lung[self.idx(p)])

    def edt_at(self, p):
        z, y, x = self.idx(p)
        return float(self.edt[z, min(y // 2, self.edt.shape[1] - 1), min(x // 2, self.edt.shape[2] - 1)])

    def left(self, p, margin):
        return p[0] - margin > 0.0  # LPS: +x is the patient's left


def acrin_sample(rng, ac, want_nodules, side="left"):
    half = WIN * SPACING / 2.0
    for _ in range(200):
        pool = ac.lung_vox if rng.uniform() < 0.85 else ac.body_vox
        p = ac.mm(pool[rng.integers(len(pool))])
        if (side == "left" and p[0] - half > 5.0) or (side == "right" and p[0] + half < -5.0):
            break
    out_origin = p - half + rng.uniform(0, SPACING, 3)
    sp = ac.spacing
    i0 = np.floor((out_origin - ac.origin) / sp).astype(int) - 1
    i1 = np.ceil((out_origin + WIN * SPACING - ac.origin) / sp).astype(int) + 2
    shape = np.array(ac.hu.shape)[::-1]
    i0c, i1c = np.clip(i0, 0, shape), np.clip(i1, 0, shape)
    native = np.full((i1[2] - i0[2], i1[1] - i0[1], i1[0] - i0[0]), -1024.0, np.float32)
    native[i0c[2] - i0[2]: i1c[2] - i0[2], i0c[1] - i0[1]: i1c[1] - i0[1], i0c[0] - i0[0]: i1c[0] - i0[0]] = \
        ac.hu[i0c[2]:i1c[2], i0c[1]:i1c[1], i0c[0]:i1c[0]]
    lo = ac.origin + i0 * sp
    nodules = []
    if want_nodules:
        k = rng.choice([1, 1, 1, 2, 3])
        vp = []
        for _ in range(300):
            v = ac.vessel_vox[rng.integers(len(ac.vessel_vox))]
            q = ac.mm(v)
            if np.all(np.abs(q - p) < half - 2):
                vp.append((q, 1.5))
            if len(vp) >= 30:
                break
        nodules = place_nodules(rng, [random_nodule(rng) for _ in range(k)], ac.in_lung, ac.edt_at, vp, p, half - 2.0)
        if side == "left":
            nodules = [n for n in nodules if n["center_mm"][0] > 0]
    if nodules:
        gz, gy, gx = (lo[a] + np.arange(native.shape[2 - a]) * sp[a] for a in (2, 1, 0))
        pz, py, px = np.meshgrid(gz, gy, gx, indexing="ij")
        for nod in nodules:
            insert_nodule(native, px, py, pz, nod, sp[2], 20.0, rng)
    x = resample_patch(native, lo, sp, out_origin)
    return x, target_patch(nodules, out_origin), nodules


def step_data(args):
    t0 = time.time()
    ac = Acrin() if acrin_dir() is not None else None
    if ac is None:
        log("ACRIN CT not found: training on synthetic chests only")
    for split, n, seed in (("train", args.n_train, 1), ("val", args.n_val_patches, 2)):
        cache = WORK / f"{split}.npz"
        if cache.exists():
            continue
        rng = np.random.default_rng([SEED, seed])
        xs = np.zeros((n, WIN, WIN, WIN), np.float16)
        ts = np.zeros((n, WIN, WIN, WIN), np.uint8)
        info = []
        case = None
        te = time.time()
        for i in range(n):
            if i % 8 == 0:
                case = random_case(rng)
            want = rng.uniform() < 0.7
            if ac is not None and rng.uniform() < 0.4:
                x, t, nods = acrin_sample(rng, ac, want)
                src = "acrin-left"
            else:
                x, t, nods = synth_sample(rng, case, want)
                src = "synthetic"
            xs[i] = to_unit(x)
            ts[i] = np.round(t * 255).astype(np.uint8)
            info.append({"source": src, "nodules": [{k: n[k] for k in ("diameter_mm", "kind", "placement")} for n in nods]})
            if (i + 1) % 200 == 0:
                log(f"{split}: {i + 1}/{n} patches ({(time.time() - te) / (i + 1):.3f} s each)")
        np.savez(cache, x=xs, t=ts)
        (WORK / f"{split}-patches.json").write_text(json.dumps(info))
    record_time(WORK, "data", time.time() - t0)


# ---------------------------------------------------------------------------------------------
# The network


def build_model():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def cbr(i, o, stride=1):
        return nn.Sequential(nn.Conv3d(i, o, 3, stride, 1, bias=False), nn.BatchNorm3d(o), nn.ReLU(inplace=True))

    class LucentNodule(nn.Module):
        """A small 3-D U-Net: 32^3 (8 ch) -> 16^3 (16) -> 8^3 (32, dilated context) and back to
        32^3; a per-voxel nodule probability (sigmoid inside the graph)."""

        def __init__(self, w=(8, 16, 32)):
            super().__init__()
            self.e1 = cbr(1, w[0])
            self.e2 = nn.Sequential(cbr(w[0], w[1], 2), cbr(w[1], w[1]))
            self.e3 = nn.Sequential(cbr(w[1], w[2], 2), cbr(w[2], w[2]),
                                    nn.Conv3d(w[2], w[2], 3, 1, 2, dilation=2, bias=False), nn.BatchNorm3d(w[2]),
                                    nn.ReLU(inplace=True))
            self.d2 = cbr(w[2] + w[1], w[1])
            self.d1 = cbr(w[1] + w[0], w[0])
            self.head = nn.Conv3d(w[0], 1, 1)

        def logits(self, x):
            x1 = self.e1(x)
            x2 = self.e2(x1)
            x3 = self.e3(x2)
            u = F.interpolate(x3, scale_factor=2.0, mode="nearest")
            u = self.d2(torch.cat([u, x2], 1))
            u = F.interpolate(u, scale_factor=2.0, mode="nearest")
            u = self.d1(torch.cat([u, x1], 1))
            return self.head(u)

        def forward(self, x):
            return torch.sigmoid(self.logits(x))

    return LucentNodule()


def augment(x, t, gen):
    """Flips on every axis and an in-plane transpose (the grid is isotropic), intensity jitter."""
    import torch

    if torch.rand(1, generator=gen) < 0.5:
        x, t = x.flip(2), t.flip(2)
    if torch.rand(1, generator=gen) < 0.5:
        x, t = x.flip(3), t.flip(3)
    if torch.rand(1, generator=gen) < 0.5:
        x, t = x.flip(4), t.flip(4)
    if torch.rand(1, generator=gen) < 0.5:
        x, t = x.transpose(3, 4), t.transpose(3, 4)
    n = x.shape[0]
    shift = (torch.rand(n, 1, 1, 1, 1, generator=gen) - 0.5) * (60.0 / (HU_MAX - HU_MIN))
    return (x + shift * (x > 0.02)).clamp(0.0, 1.0), t


def step_train(args):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(SEED)
    t0 = time.time()
    d = np.load(WORK / "train.npz")
    x_all, t_all = torch.from_numpy(d["x"]), torch.from_numpy(d["t"])
    v = np.load(WORK / "val.npz")
    n = x_all.shape[0]
    model = build_model()
    params = sum(p.numel() for p in model.parameters())
    steps_per_epoch = n // BATCH
    log(f"training {params} parameters on {n} patches, {args.epochs} epochs, {args.threads} thread(s)")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    # One-cycle (10% warm-up, cosine down) over the planned steps, or over the time budget when the
    # machine is too busy to do them all in it (then the weights depend on the machine's speed).
    total_steps, budget = args.epochs * steps_per_epoch, args.max_train_minutes * 60.0
    max_lr, step = 3e-3, 0
    history = []
    done = False
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        te, total = time.time(), 0.0
        for b in range(steps_per_epoch):
            frac = max(step / total_steps, (time.time() - t0) / budget)
            if frac >= 1.0:
                done = True
                break
            lr = max_lr * (frac / 0.1 if frac < 0.1 else 0.5 * (1 + math.cos(math.pi * (frac - 0.1) / 0.9)))
            for g in opt.param_groups:
                g["lr"] = max(lr, max_lr * 1e-3)
            idx = perm[b * BATCH:(b + 1) * BATCH]
            x = x_all[idx].float().unsqueeze(1)
            t = t_all[idx].float().unsqueeze(1) / 255.0
            x, t = augment(x, t, gen)
            logit = model.logits(x)
            bce = F.binary_cross_entropy_with_logits(logit, t, pos_weight=torch.tensor(20.0))
            p = torch.sigmoid(logit)
            inter = (p * t).sum(dim=(1, 2, 3, 4))
            dice = 1.0 - (2 * inter + 1.0) / (p.sum(dim=(1, 2, 3, 4)) + t.sum(dim=(1, 2, 3, 4)) + 1.0)
            loss = bce + 0.5 * dice.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            total += float(loss)
            if step % 100 == 0:
                log(f"step {step}/{total_steps} loss {total / (b + 1):.4f} lr {lr:.2e} ({(time.time() - te) / (b + 1):.2f} s/step)")
        val = patch_metrics(model, v["x"], v["t"])
        entry = {"epoch": epoch + 1, "train_loss": round(total / max(b, 1), 4), "steps": step, **val,
                 "seconds": round(time.time() - te, 1)}
        history.append(entry)
        log(json.dumps(entry))
        torch.save(model.state_dict(), WORK / "model.pt")
        if done:
            log(f"stopped at step {step} of {total_steps}: the {args.max_train_minutes:g} minute budget is spent")
            break
    (WORK / "history.json").write_text(json.dumps(history, indent=2))
    record_time(WORK, "train", time.time() - t0)


def patch_metrics(model, xs, ts, batch=16):
    """Validation patches: voxel Dice at 0.5, and per-patch detection (max prob) AUROC."""
    import torch

    model.eval()
    inter = union = 0.0
    peaks, has = [], []
    with torch.no_grad():
        for i in range(0, len(xs), batch):
            x = torch.from_numpy(xs[i:i + batch].astype(np.float32)).unsqueeze(1)
            t = ts[i:i + batch].astype(np.float32) / 255.0
            p = model(x).numpy()[:, 0]
            pb, tb = p >= 0.5, t >= 0.5
            inter += float((pb & tb).sum())
            union += float(pb.sum() + tb.sum())
            peaks += list(p.reshape(len(p), -1).max(1))
            has += list(t.reshape(len(t), -1).max(1) >= 0.5)
    return {"val_dice": round(2 * inter / max(union, 1.0), 4), "val_patch_auroc": round(auroc(has, peaks) or 0.0, 4)}


# ---------------------------------------------------------------------------------------------
# export


def step_export(args):
    import onnx
    import onnxruntime as ort
    import torch

    t0 = time.time()
    torch.set_num_threads(args.threads)
    model = build_model()
    model.load_state_dict(torch.load(WORK / "model.pt", weights_only=True))
    model.eval()
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    tmp = WORK / "export.onnx"
    torch.onnx.export(model, torch.zeros(1, 1, WIN, WIN, WIN), str(tmp), opset_version=17,
                      input_names=["volume"], output_names=["heatmap"],
                      dynamic_axes={"volume": {0: "N"}, "heatmap": {0: "N"}}, do_constant_folding=True, dynamo=False)
    m = onnx.load(str(tmp))
    m.producer_name = "lucent/models/training/ldct_nodule.py"
    m.producer_version = VERSION
    m.doc_string = "Lucent LDCT nodule detector (trained on synthetic nodules). Research and demonstration only."
    onnx.checker.check_model(m, full_check=True)
    data = m.SerializeToString(deterministic=True)
    (MODEL_DIR / ONNX_NAME).write_bytes(data)
    x = np.load(WORK / "val.npz")["x"][:3].astype(np.float32)[:, None]
    sess = ort.InferenceSession(str(MODEL_DIR / ONNX_NAME), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"volume": x})
    with torch.no_grad():
        ty = model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(y - ty).max())
    log(f"exported {len(data)} bytes; ONNX Runtime vs torch max abs difference {diff:.2e}")
    if diff > 1e-3:
        sys.exit(f"ONNX and torch disagree by {diff}")
    (WORK / "export.json").write_text(json.dumps({"ort_vs_torch_max_abs_diff": diff, "bytes": len(data),
                                                  "params": sum(p.numel() for p in model.parameters())}))
    record_time(WORK, "export", time.time() - t0)


# ---------------------------------------------------------------------------------------------
# Manifest


def write_manifest(directory, model_id, threshold, max_candidates, provenance_extra=""):
    data = (MODEL_DIR / ONNX_NAME).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    if directory != MODEL_DIR:
        shutil.copyfile(MODEL_DIR / ONNX_NAME, directory / ONNX_NAME)
    text = f'''# Generated by models/training/ldct_nodule.py: do not edit by hand. See MODEL_CARD.md.
id = "{model_id}"
name = "Lucent LDCT nodule detector (trained on synthetic nodules)"
version = "{VERSION}"
file = "{ONNX_NAME}"
sha256 = "{sha}"
license = "MIT OR Apache-2.0"
provenance = "Trained from scratch by models/training/ldct_nodule.py (PyTorch 2.5.1, seed {SEED}, CPU) on 32^3 patches at 2 mm from procedural chest CTs (a port of pacs::synth's phantom with varied anatomy, tubular vessels and noise) and from the patient-left half of one real low-dose chest CT (TCIA ACRIN-NSCLC-FDG-PET-042, CC BY 3.0), with synthetic solid, part-solid and ground-glass nodules (3-30 mm) inserted; no real nodules were used. {len(data)} bytes.{provenance_extra}"
intended_use = "Research and demonstration only; not for diagnosis. Proposes lung nodule candidates on adult chest CT for demonstrating Lucent. Trained on synthetic nodules only: its sensitivity and false-positive rate on real scans are unknown and its real-CT behaviour is poor (see MODEL_CARD.md)."
test_only = false
modalities = ["CT"]
body_parts = ["CHEST"]

[[inputs]]
name = "volume"
dtype = "float32"
shape = [-1, 1, {WIN}, {WIN}, {WIN}]

[preprocessing]
kind = "ct_volume"
hu_window = {{ min = {HU_MIN}, max = {HU_MAX} }}
normalization = {{ kind = "unit" }}
target_spacing_mm = {{ x = {SPACING}, y = {SPACING}, z = {SPACING} }}
sliding_window = {{ size = {{ x = {WIN}, y = {WIN}, z = {WIN} }}, overlap = {OVERLAP} }}

[[outputs]]
name = "heatmap"
dtype = "float32"
shape = [-1, 1, {WIN}, {WIN}, {WIN}]
kind = "heatmap_per_label"

[[labels]]
name = "Nodule"
radlex = "RID50149"
threshold = {threshold}

[postprocessing]
nms_iou = {NMS_IOU}
max_candidates = {max_candidates}
min_size_mm = {MIN_SIZE_MM}
lung_region_mm = {LUNG_REGION_MM}
'''
    (directory / f"{model_id}.toml").write_text(text)
    return sha, len(data)


# ---------------------------------------------------------------------------------------------
# Held-out scans written as DICOM


def write_dicom_series(out_dir, hu_zyx, origin, spacing, seed_name, description, template=None):
    """Uncompressed CT slices, z ascending; `template` (a pydicom dataset) gives the header when
    copying a real series."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    out_dir.mkdir(parents=True, exist_ok=True)
    h = lambda s: "2.25." + str(int(hashlib.sha256(s.encode()).hexdigest()[:30], 16))  # noqa: E731
    series_uid, study_uid, for_uid = h("series:" + seed_name), h("study:" + seed_name), h("for:" + seed_name)
    for k in range(hu_zyx.shape[0]):
        sop = h(f"sop:{seed_name}:{k}")
        if template is not None:
            ds = template[k].copy()
            ds.SOPInstanceUID = sop
            ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.SeriesInstanceUID = series_uid
            ds.SeriesDescription = description
            stored = np.round((hu_zyx[k] - float(ds.RescaleIntercept)) / float(ds.RescaleSlope))
            ds.PixelData = np.clip(stored, -32768, 32767).astype(np.int16).tobytes()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.save_as(out_dir / f"CT{k + 1:04d}.dcm", enforce_file_format=True)
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = generate_uid(entropy_srcs=["lucent-ldct-nodule"])
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, sop
        ds.Modality, ds.BodyPartExamined = "CT", "CHEST"
        ds.PatientName, ds.PatientID = "SYNTHETIC^NODULE", seed_name[:60]
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, for_uid
        ds.StudyDate, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "20260101", "1", 2, k + 1
        ds.SeriesDescription = description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{origin[0]:.4f}", f"{origin[1]:.4f}", f"{origin[2] + k * spacing[2]:.4f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.4f}"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = hu_zyx.shape[1], hu_zyx.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.clip(np.round(hu_zyx[k]) + 1024, 0, 4095).astype(np.uint16).tobytes()
        ds.save_as(out_dir / f"CT{k + 1:04d}.dcm", enforce_file_format=True)


def synth_scan(rng, case, size, slices, n_nodules, pixel_mm=None):
    """A whole synthetic chest (HU [z, y, x]) with nodules; geometry like pacs::synth's chest()."""
    fov = 350.0
    ps = pixel_mm or fov / size
    ss = 2.5
    origin = np.array([-fov / 2.0, -fov / 2.0, -slices * ss])
    gx = origin[0] + np.arange(size) * ps
    gy = origin[1] + np.arange(size) * ps
    hu = np.zeros((slices, size, size), np.float32)
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    for k in range(slices):
        zk = origin[2] + k * ss
        hu[k] = phantom_hu(xx[None], yy[None], np.full((1,) + xx.shape, zk), case, axes=(gx, gy, np.array([zk])))[0]
    # Placement on a 2 mm lung map of the whole chest.
    cg = [np.arange(-175.0, 175.0, SPACING), np.arange(-175.0, 175.0, SPACING), np.arange(origin[2], 0.0, SPACING)]
    cz, cy, cx = np.meshgrid(cg[2], cg[1], cg[0], indexing="ij")
    lungc, _, _ = lung_masks(cx, cy, cz, case)
    edt = ndi.distance_transform_edt(lungc, sampling=SPACING)
    c0 = np.array([cg[0][0], cg[1][0], cg[2][0]])

    def cidx(q):
        i = np.round((np.asarray(q) - c0) / SPACING).astype(int)[::-1]
        return tuple(np.clip(i, 0, np.array(lungc.shape) - 1))

    lung_pts = np.argwhere(lungc)
    nodules = []
    vp = vessel_points(case["vessels"], rng, 80) if case["vessels"] else []
    tries = 0
    while len(nodules) < n_nodules and tries < 40:
        tries += 1
        centre = c0 + lung_pts[rng.integers(len(lung_pts))][::-1] * SPACING
        nod = random_nodule(rng)
        near_vp = [v for v in vp if np.all(np.abs(np.asarray(v[0]) - centre) < 40)]
        got = place_nodules(rng, [nod], lambda q: bool(lungc[cidx(q)]), lambda q: float(edt[cidx(q)]), near_vp,
                            centre, 40.0)
        if got and all(np.linalg.norm(np.asarray(got[0]["center_mm"]) - np.asarray(q["center_mm"])) >
                       got[0]["diameter_mm"] / 2 + q["diameter_mm"] / 2 + 10 for q in nodules):
            nodules.append(got[0])
    gz = origin[2] + np.arange(slices) * ss
    for nod in nodules:
        r = nod["diameter_mm"] / 2 * 1.3 + ss
        c = nod["center_mm"]
        sel = [np.nonzero(np.abs(g - c[a]) <= r + 2)[0] for a, g in enumerate((gx, gy, gz))]
        sub = np.ix_(sel[2], sel[1], sel[0])
        pz, py, px = np.meshgrid(gz[sel[2]], gy[sel[1]], gx[sel[0]], indexing="ij")
        block = hu[sub]
        insert_nodule(block, px, py, pz, nod, ss, case["noise"], rng)
        hu[sub] = block
    add_noise(hu, case["noise"], case["noise_blur"], rng)
    return hu, origin, np.array([ps, ps, ss]), nodules


def run_lucent_read(path, model_id, models_dir, out_json):
    env = {**os.environ, "LUCENT_MODELS": str(models_dir)}
    store = WORK / "store"
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    r = subprocess.run([lucent_bin(log), "read", str(path), "--model", model_id, "--json", str(out_json),
                        "--store", str(store)], env=env, capture_output=True, text=True)
    dt = time.time() - t0
    if r.returncode != 0:
        raise RuntimeError(f"lucent read failed: {r.stderr[-2000:]}")
    rep = json.loads(Path(out_json).read_text())
    cands = []
    for s in rep["series"]:
        for m in s.get("models", []):
            if m.get("error"):
                raise RuntimeError(f"{model_id}: {m['error']}")
        for n in s.get("nodules", []):
            c = n["candidate"]
            cands.append({"center_mm": c["center_patient_mm"], "score": c["score"], "size_mm": c["size_mm"],
                          "center_voxel": c["center_voxel"], "box_min_voxel": c["box_min_voxel"],
                          "box_max_voxel": c["box_max_voxel"],
                          "measurement": None if n.get("measurement") is None else {
                              "mean_diameter_mm": n["measurement"]["axes"]["mean_diameter_mm"],
                              "nodule_type": n["measurement"]["nodule_type"],
                              "reached_limit": n["measurement"]["reached_limit"]},
                          "lung_rads": n.get("lung_rads")})
    return cands, dt


def match(cands, nodules):
    """Per candidate: index of the nodule it hits (nearest whose max(radius, 3 mm) sphere holds its
    centre) or None. Per nodule: best score of a hitting candidate (or None)."""
    hit_of, best = [], [None] * len(nodules)
    for c in cands:
        p = np.asarray(c["center_mm"])
        hits = [(np.linalg.norm(p - np.asarray(n["center_mm"])), j) for j, n in enumerate(nodules)
                if np.linalg.norm(p - np.asarray(n["center_mm"])) <= max(n["diameter_mm"] / 2.0, HIT_MIN_MM)]
        j = min(hits)[1] if hits else None
        hit_of.append(j)
        if j is not None and (best[j] is None or c["score"] > best[j]):
            best[j] = c["score"]
    return hit_of, best


def froc(scans):
    """scans: [(cands, nodules)]. Candidates hitting a nodule are true positives (extra hits on the
    same nodule are ignored: neither TP nor FP); the rest are false positives."""
    fp_scores, nod_best = [], []
    for cands, nods in scans:
        hit_of, best = match(cands, nods)
        fp_scores += [c["score"] for c, h in zip(cands, hit_of) if h is None]
        nod_best += best
    n_scans, n_nod = len(scans), len(nod_best)
    fp_scores = np.sort(np.asarray(fp_scores))[::-1]
    found = np.array([b if b is not None else -1.0 for b in nod_best])
    thresholds = np.unique(np.concatenate([fp_scores, found[found >= 0], [1.01]]))[::-1]
    curve = []
    for t in thresholds:
        curve.append((float(t), float((fp_scores >= t).sum()) / n_scans, float((found >= t).sum()) / max(n_nod, 1)))
    sens_at = {}
    for rate in FROC_RATES:
        ok = [s for t, f, s in curve if f <= rate]
        sens_at[str(rate)] = max(ok) if ok else 0.0
    return {"scans": n_scans, "nodules": n_nod, "sensitivity_at_fp": sens_at,
            "cpm": float(np.mean(list(sens_at.values()))),
            "max_sensitivity": float((found >= 0).mean()) if n_nod else None,
            "fp_per_scan_at_eval_threshold": float(len(fp_scores)) / n_scans, "curve": curve}


def threshold_for_rate(scans, rate):
    r = froc(scans)
    ok = [(t, f, s) for t, f, s in r["curve"] if f <= rate]
    best = max(ok, key=lambda c: (c[2], -c[0])) if ok else (0.99, 0, 0)
    return best[0]


def froc_bootstrap(scans, reps=500):
    rng = np.random.default_rng(SEED)
    cpms = []
    for _ in range(reps):
        idx = rng.integers(0, len(scans), len(scans))
        cpms.append(froc([scans[i] for i in idx])["cpm"])
    return [float(np.percentile(cpms, 2.5)), float(np.percentile(cpms, 97.5))]


def subgroup_sensitivity(scans, threshold):
    """Sensitivity by kind, size band and placement at one score threshold."""
    rows = []
    for cands, nods in scans:
        _, best = match(cands, nods)
        for n, b in zip(nods, best):
            rows.append((n, b is not None and b >= threshold))
    out = {}
    for key, groups in (("kind", KINDS), ("placement", PLACEMENTS)):
        out[key] = {g: {"n": sum(1 for n, _ in rows if n[key] == g),
                        "sensitivity": (lambda v: float(np.mean(v)) if v else None)([h for n, h in rows if n[key] == g])}
                    for g in groups}
    out["size_mm"] = {}
    for lo, hi in SIZE_BANDS:
        v = [h for n, h in rows if lo <= n["diameter_mm"] < hi]
        out["size_mm"][f"{lo}-{int(hi)}"] = {"n": len(v), "sensitivity": float(np.mean(v)) if v else None}
    return out


def lean(nods):
    return [{"center_mm": [round(v, 2) for v in n["center_mm"]], "diameter_mm": round(n["diameter_mm"], 2),
             "kind": n["kind"], "placement": n["placement"], "hu": round(n["hu"], 1)} for n in nods]


def make_eval_scans(args):
    """Writes (once) the held-out synthetic scans and the ACRIN copies; returns their list."""
    listing = WORK / "eval-scans.json"
    if listing.exists():
        return json.loads(listing.read_text())
    scans = []
    rng = np.random.default_rng([SEED, 7])
    for split, count, size in (("val", args.n_val_scans, 256), ("test", args.n_test_scans, 256)):
        for i in range(count):
            case = random_case(rng)
            slices = int(rng.integers(100, 125)) if not args.quick else 60
            if args.quick:
                case["z_shift"] = 100.0
            hu, origin, spacing, nods = synth_scan(rng, case, size, slices, int(rng.integers(2, 7)))
            name = f"{split}-synth-{i:02d}"
            write_dicom_series(WORK / "scans" / name, hu, origin, spacing, f"lucent-ldct-nodule-{name}",
                               "Synthetic chest CT with nodules (held out)")
            scans.append({"name": name, "split": split, "source": "synthetic", "nodules": lean(nods),
                          "dims": list(hu.shape[::-1]), "spacing_mm": spacing.tolist()})
            log(f"wrote {name}: {hu.shape[::-1]} voxels, {len(nods)} nodules")
    if acrin_dir() is not None and args.n_acrin_test > 0:
        import pydicom

        ac = Acrin()
        template = [pydicom.dcmread(WORK / "acrin-raw" / f) for f in ac.files]
        gz, gy, gx = (ac.origin[a] + np.arange(ac.hu.shape[2 - a]) * ac.spacing[a] for a in (2, 1, 0))
        for i in range(args.n_acrin_test):
            hu = ac.hu.copy()
            nods = []
            for _ in range(400):
                if len(nods) >= 5:
                    break
                v = ac.lung_vox[rng.integers(len(ac.lung_vox))]
                p = ac.mm(v)
                if p[0] > -25.0:  # the patient's right lung only (held out from training)
                    continue
                vp = [(ac.mm(q), 1.5) for q in ac.vessel_vox[rng.integers(len(ac.vessel_vox), size=400)]
                      if np.all(np.abs(ac.mm(q) - p) < 30) and ac.mm(q)[0] < -25.0][:20]
                got = place_nodules(rng, [random_nodule(rng)], ac.in_lung, ac.edt_at, vp, p, 25.0)
                if got and got[0]["center_mm"][0] < -20.0 and all(
                        np.linalg.norm(np.asarray(got[0]["center_mm"]) - np.asarray(q["center_mm"])) >
                        got[0]["diameter_mm"] / 2 + q["diameter_mm"] / 2 + 10 for q in nods):
                    nods.append(got[0])
            for nod in nods:
                r = nod["diameter_mm"] / 2 * 1.3 + ac.spacing[2]
                c = nod["center_mm"]
                sel = [np.nonzero(np.abs(g - c[a]) <= r + 2)[0] for a, g in enumerate((gx, gy, gz))]
                sub = np.ix_(sel[2], sel[1], sel[0])
                pz, py, px = np.meshgrid(gz[sel[2]], gy[sel[1]], gx[sel[0]], indexing="ij")
                block = hu[sub]
                insert_nodule(block, px, py, pz, nod, ac.spacing[2], 20.0, rng)
                hu[sub] = block
            name = f"test-acrin-{i:02d}"
            write_dicom_series(WORK / "scans" / name, hu, ac.origin, ac.spacing, f"lucent-ldct-nodule-{name}",
                               "ACRIN CT with synthetic nodules inserted (held-out right lung)", template=template)
            scans.append({"name": name, "split": "test", "source": "acrin-inserted", "nodules": lean(nods),
                          "dims": list(hu.shape[::-1]), "spacing_mm": ac.spacing.tolist()})
            log(f"wrote {name}: {len(nods)} nodules in the right lung")
    listing.write_text(json.dumps(scans, indent=1))
    return scans


def draw_candidates(png, series_dir, cands, title_lines, shown=None):
    """A small PNG: up to 4 axial slices (lung window) through the top candidates, boxes drawn."""
    import pydicom
    from PIL import Image, ImageDraw

    files = sorted(series_dir.glob("*.dcm"))
    ds = [pydicom.dcmread(f) for f in files]
    ds.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    top = shown if shown is not None else sorted(cands, key=lambda c: -c["score"])[:4]
    tiles = []
    for j, c in enumerate(top):
        z = float(c["center_mm"][2])
        k = int(np.argmin([abs(float(d.ImagePositionPatient[2]) - z) for d in ds]))
        d = ds[k]
        hu = d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
        g = np.clip((hu + 1350.0) / 1500.0 * 255.0, 0, 255).astype(np.uint8)
        im = Image.fromarray(g).convert("RGB")
        dr = ImageDraw.Draw(im)
        ox, oy = float(d.ImagePositionPatient[0]), float(d.ImagePositionPatient[1])
        px, py = float(d.PixelSpacing[1]), float(d.PixelSpacing[0])
        for i, o in enumerate(cands):
            if abs(float(o["center_mm"][2]) - z) > max(o["size_mm"][2] / 2, 2.0):
                continue
            cx, cy = (o["center_mm"][0] - ox) / px, (o["center_mm"][1] - oy) / py
            hx, hy = o["size_mm"][0] / 2 / px + 3, o["size_mm"][1] / 2 / py + 3
            col = (255, 60, 60) if o is c else (255, 200, 0)
            dr.rectangle([cx - hx, cy - hy, cx + hx, cy + hy], outline=col, width=4)
        dr.text((6, 6), f"score {c['score']:.2f}  z {z:.0f} mm  {c.get('where', '')}", fill=(255, 255, 0))
        tiles.append(im.resize((256, 256), Image.BILINEAR))
    if not tiles:
        d = ds[len(ds) // 2]
        hu = d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
        im = Image.fromarray(np.clip((hu + 1350.0) / 1500.0 * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
        ImageDraw.Draw(im).text((6, 6), "no candidates", fill=(255, 255, 0))
        tiles.append(im.resize((256, 256), Image.BILINEAR))
    sheet = Image.new("RGB", (256 * len(tiles), 256 + 14 * len(title_lines)), (0, 0, 0))
    for i, t in enumerate(tiles):
        sheet.paste(t, (256 * i, 14 * len(title_lines)))
    dr = ImageDraw.Draw(sheet)
    for i, line in enumerate(title_lines):
        dr.text((4, 1 + 14 * i), line, fill=(255, 255, 255))
    sheet.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(png, optimize=True)


DEMO_NODULES = {  # app/src/demo.rs
    "DEMO-005": [{"center_mm": [70.0, -20.0, -140.0], "diameter_mm": 9.0, "kind": "solid", "placement": "demo"},
                 {"center_mm": [-80.0, 10.0, -90.0], "diameter_mm": 14.0, "kind": "ground_glass", "placement": "demo"}],
    "DEMO-006": [{"center_mm": [-65.0, -30.0, -160.0], "diameter_mm": 12.0, "kind": "part_solid", "placement": "demo"}],
}


def demo_results(threshold):
    import pydicom

    store = WORK / "demo-store"
    if not (store / "demo-version").exists():
        subprocess.run([lucent_bin(log), "demo", "--dir", str(store)], check=True, capture_output=True)
    out = []
    for series in sorted(p for p in (store / "files").glob("*/*") if p.is_dir()):
        files = sorted(series.glob("*"))
        if not files:
            continue
        d = pydicom.dcmread(files[0], stop_before_pixels=True)
        if d.Modality != "CT" or d.PatientID not in DEMO_NODULES:
            continue
        cands, dt = run_lucent_read(series, MODEL_ID, MODEL_DIR.parent, WORK / "json" / f"demo-{d.PatientID}.json")
        nods = DEMO_NODULES[d.PatientID]
        hit_of, best = match(cands, nods)
        out.append({"patient_id": d.PatientID, "seconds": round(dt, 2), "threshold": threshold,
                    "nodules": [n | {"found_score": b} for n, b in zip(nods, best)],
                    "false_positives": sum(1 for h in hit_of if h is None), "candidates": cands})
        log(f"demo {d.PatientID}: {len(cands)} candidates, nodule scores {best}, {dt:.1f} s")
    return out


def step_evaluate(args):
    t0 = time.time()
    eval_models = WORK / "eval-models"
    eval_id = MODEL_ID + "-eval"
    sha, size = write_manifest(MODEL_DIR, MODEL_ID, 0.5, MAX_CANDIDATES)
    scans = make_eval_scans(args)

    def read_all(level):
        write_manifest(eval_models / eval_id, eval_id, level, EVAL_MAX_CANDIDATES)
        res_path = WORK / f"eval-results-{level}.json"
        results = json.loads(res_path.read_text()) if res_path.exists() else {}
        if results.get("_sha") != sha or results.get("_threshold") != level:
            results = {"_sha": sha, "_threshold": level}
        for s in scans:
            if s["name"] in results:
                continue
            cands, dt = run_lucent_read(WORK / "scans" / s["name"], eval_id, eval_models,
                                        WORK / "json" / f"{s['name']}.json")
            results[s["name"]] = {"candidates": cands, "seconds": round(dt, 2)}
            log(f"{s['name']} at {level}: {len(cands)} candidates in {dt:.1f} s")
            res_path.write_text(json.dumps(results))
        return results

    low_results = read_all(EVAL_THRESHOLD_LOW)
    results = read_all(EVAL_THRESHOLD)
    by = lambda split, src, res=results: [(res[s["name"]]["candidates"], s["nodules"]) for s in scans  # noqa: E731
                                          if s["split"] == split and s["source"] == src]
    val, test, acrin_test = by("val", "synthetic"), by("test", "synthetic"), by("test", "acrin-inserted")
    threshold = round(max(threshold_for_rate(val, OPERATING_FP_PER_SCAN), EVAL_THRESHOLD), 3)
    metrics = {"model": MODEL_ID, "version": VERSION, "eval_threshold": EVAL_THRESHOLD,
               "operating_threshold": threshold, "hit_rule_min_mm": HIT_MIN_MM}
    for key, sc in (("synthetic_val", val), ("synthetic_test", test), ("acrin_inserted_test", acrin_test)):
        if not sc:
            metrics[key] = None
            continue
        f = froc(sc)
        f.pop("curve")
        f["cpm_ci95"] = froc_bootstrap(sc)
        f["at_operating_threshold"] = {
            "fp_per_scan": float(np.mean([sum(1 for c, h in zip(cands, match(cands, n)[0]) if h is None and c["score"] >= threshold)
                                          for cands, n in sc])),
            "sensitivity": float(np.mean([b is not None and b >= threshold for cands, n in sc for b in match(cands, n)[1]])),
        }
        f["by_subgroup_at_operating_threshold"] = subgroup_sensitivity(sc, threshold)
        f["by_subgroup_at_4_fp"] = subgroup_sensitivity(sc, threshold_for_rate(sc, 4.0))
        metrics[key] = f
        log(f"{key}: CPM {f['cpm']:.3f} {json.dumps(f['sensitivity_at_fp'])}")
    metrics["held_out_reads_seconds_total"] = round(sum(r["seconds"] for res in (results, low_results)
                                                        for k, r in res.items() if not k.startswith("_")), 1)
    metrics["froc_at_low_level"] = {"level": EVAL_THRESHOLD_LOW}
    for key, split, src in (("synthetic_test", "test", "synthetic"), ("acrin_inserted_test", "test", "acrin-inserted")):
        sc = by(split, src, low_results)
        if sc:
            f = froc(sc)
            metrics["froc_at_low_level"][key] = {k: f[k] for k in ("sensitivity_at_fp", "cpm", "max_sensitivity",
                                                                    "fp_per_scan_at_eval_threshold")}
    metrics["lucent_read_seconds"] = {
        "synthetic_256x256": float(np.median([results[s["name"]]["seconds"] for s in scans if s["source"] == "synthetic"])),
        "acrin_512x512x135": float(np.median([results[s["name"]]["seconds"] for s in scans if s["source"] == "acrin-inserted"]))
        if acrin_test else None}
    # Ship the manifest with the operating threshold.
    sha, size = write_manifest(MODEL_DIR, MODEL_ID, threshold, MAX_CANDIDATES)
    # The real ACRIN CT as it is, with the shipped manifest.
    src = acrin_dir()
    if src is not None:
        cands, dt = run_lucent_read(src, MODEL_ID, MODEL_DIR.parent, WORK / "json" / "acrin-real.json")
        low, _ = run_lucent_read(src, eval_id, eval_models, WORK / "json" / "acrin-real-eval.json")
        # Where each candidate lies, by this script's HU masks (lung region = air components enclosed by
        # the body, closed so that vessels and nodules count; body = filled region above -400 HU).
        ac = Acrin()

        def where(c):
            i = ac.idx(c["center_mm"])
            return "lung" if ac.lung[i] else ("body" if ac.body[i] else "outside")

        for c in cands + low:
            c["where"] = where(c)
        count = lambda cs: {w: sum(1 for c in cs if c["where"] == w) for w in ("lung", "body", "outside")}  # noqa: E731
        metrics["acrin_real"] = {"seconds": round(dt, 2), "candidates": cands, "where": count(cands),
                                 "candidates_at_eval_threshold": len(low), "where_at_eval_threshold": count(low)}
        by_score = sorted(cands, key=lambda c: -c["score"])
        shown = [c for c in by_score if c["where"] != "lung"][:2] + [c for c in by_score if c["where"] == "lung"][:2]
        draw_candidates(MODEL_DIR / "acrin_candidates.png", WORK / "acrin-raw", cands,
                        [f"{MODEL_ID} {VERSION} on the real ACRIN low-dose CT (no nodules labelled; right hilar mass)",
                         f"{len(cands)} candidates at threshold {threshold}; shown: the 2 best outside the lungs, the 2 best"
                         " inside; red: the tile's candidate, yellow: others on the slice"], shown=shown)
        log(f"ACRIN (real): {len(cands)} candidates at {threshold} in {dt:.1f} s")
    else:
        metrics["acrin_real"] = None
    # Lucent's own demo CTs (pacs::synth, 512 x 512 x 120, 0.68 mm pixels, 2.5 mm slices, noise 25 HU):
    # what a user of `lucent --demo` sees; their read time is the timing reported.
    metrics["demo"] = demo_results(threshold)
    t512 = [d["seconds"] for d in metrics["demo"]]
    metrics["lucent_read_seconds"]["demo_512x512x120"] = t512
    log(f"lucent read, 512x512x120 demo CTs: {t512} s")
    for name in ("history.json", "export.json", "timings.json"):
        p = WORK / name
        metrics[name.split(".")[0]] = json.loads(p.read_text()) if p.exists() else None
    tr = WORK / "train-patches.json"
    if tr.exists():
        info = json.loads(tr.read_text())
        metrics["training_patches"] = {
            "total": len(info), "acrin": sum(1 for i in info if i["source"] == "acrin-left"),
            "with_nodules": sum(1 for i in info if i["nodules"]), "nodules": sum(len(i["nodules"]) for i in info),
            "by_kind": {k: sum(1 for i in info for n in i["nodules"] if n["kind"] == k) for k in KINDS},
            "by_placement": {k: sum(1 for i in info for n in i["nodules"] if n["placement"] == k) for k in PLACEMENTS}}
    metrics["eval_scans"] = [{k: s[k] for k in ("name", "split", "source", "dims", "spacing_mm")} | {"nodules": len(s["nodules"])}
                             for s in scans]
    metrics["sha256"], metrics["onnx_bytes"] = sha, size
    record_time(WORK, "evaluate", time.time() - t0)
    metrics["timings"] = json.loads((WORK / "timings.json").read_text())
    (MODEL_DIR / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log(f"wrote {MODEL_DIR / (MODEL_ID + '.toml')} and metrics.json")


# ---------------------------------------------------------------------------------------------
# card


def froc_table(m):
    rows = []
    for key, name in (("synthetic_test", "synthetic chests (held out)"),
                      ("acrin_inserted_test", "ACRIN CT + inserted nodules (right lung held out)"),
                      ("synthetic_val", "synthetic validation (threshold choice)")):
        f = m.get(key)
        if not f:
            continue
        s = f["sensitivity_at_fp"]
        rows.append(f"| {name} | {f['scans']} / {f['nodules']} | " + " | ".join(fmt(s[str(r)]) for r in FROC_RATES)
                    + f" | **{fmt(f['cpm'], 3)}** ({fmt(f['cpm_ci95'][0])}-{fmt(f['cpm_ci95'][1])}) | {fmt(f['max_sensitivity'])} |")
    return "\n".join(rows)


def subgroup_table(f):
    rows = []
    a, b = f["by_subgroup_at_operating_threshold"], f["by_subgroup_at_4_fp"]
    for key in ("kind", "size_mm", "placement"):
        for g, v in a[key].items():
            rows.append(f"| {key} | {g} | {v['n']} | {fmt(v['sensitivity'])} | {fmt(b[key][g]['sensitivity'])} |")
    return "\n".join(rows)


def step_ci(args):
    """`lucent synth-ct --kind nodules` + `lucent eval` with the shipped manifest: the figures CI checks."""
    from common import lucent_ci_eval, record_ci_set

    _, reports, seconds = lucent_ci_eval(WORK, "nodules", CI_SEED, CI_COUNT, [MODEL_ID], args.threads, log)
    f = reports[MODEL_ID]["froc"]
    entry = {
        "kind": "nodules", "seed": CI_SEED, "count": CI_COUNT, "seconds": seconds,
        "froc": {k: f[k] for k in ("scans", "lesions", "candidates", "at_fp_rates", "cpm", "min_hit_radius_mm")},
    }
    entry["held_out_check"] = held_out_lucent_eval(args)
    record_ci_set(MODEL_DIR / "metrics.json", entry, log)


def held_out_lucent_eval(args):
    """`lucent eval` (shipped manifest) on the held-out synthetic test scans `evaluate` wrote: its sensitivity
    and false positives per scan at the operating threshold, to set beside the card's (which come from
    `lucent read` at the lower evaluation level and this script's FROC code)."""
    scans = [s for s in json.loads((WORK / "eval-scans.json").read_text())
             if s["split"] == "test" and s["source"] == "synthetic"] if (WORK / "eval-scans.json").exists() else []
    if not scans or not all((WORK / "scans" / s["name"]).is_dir() for s in scans):
        return None
    data = WORK / "held-out-eval"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir()
    rows = ["series,x,y,z,diameter_mm"]
    for s in scans:
        (data / s["name"]).symlink_to(WORK / "scans" / s["name"])
        rows += [f"{s['name']},{n['center_mm'][0]},{n['center_mm'][1]},{n['center_mm'][2]},{n['diameter_mm']}"
                 for n in s["nodules"]] or [f"{s['name']},,,,"]
    (data / "nodules.csv").write_text("\n".join(rows) + "\n")
    out = WORK / "held-out-eval.json"
    t0 = time.time()
    subprocess.run([lucent_bin(log), "eval", "--model", MODEL_ID, "--data", str(data), "--json", str(out),
                    "--threads", str(args.threads)], check=True)
    f = json.loads(out.read_text())["models"][0]["froc"]
    last = f["curve"][-1] if f["curve"] else {"sensitivity": 0.0, "fps_per_scan": 0.0}
    return {"scans": f["scans"], "lesions": f["lesions"], "sensitivity": last["sensitivity"],
            "fps_per_scan": last["fps_per_scan"], "seconds": round(time.time() - t0, 1)}


def ci_set_text(m):
    c = m.get("lucent_ci_set")
    if not c:
        return "The CI set below was not measured (run `ldct_nodule.py ci`)."
    f = c["froc"]
    at = ", ".join(f"{fmt(s)} at {r:g}" for r, s in f["at_fp_rates"])
    return (f"**Lucent's own generator (the set CI re-checks).** `lucent synth-ct --kind nodules --seed {c['seed']} "
            f"--count {c['count']}` writes {f['scans']} scans of Lucent's analytic chest phantom (`pacs::synth`: "
            f"ellipsoid anatomy, straight vessel sheets, white noise 10-30 HU; 256 x 256 pixels of 1.37 mm, 70 slices "
            f"of 2.5 mm) with {f['lesions']} spherical nodules of 4-25 mm (every third scan has none); `lucent eval "
            f"--model {MODEL_ID}` reads them with the **shipped** manifest (threshold {m['operating_threshold']}, at "
            f"most {MAX_CANDIDATES} candidates) and counts hits within max(radius, {f['min_hit_radius_mm']:g} mm): "
            f"{f['candidates']} candidates, sensitivity {at} FPs per scan, CPM **{fmt(f['cpm'], 3)}**. This phantom "
            "is far simpler than the held-out chests above (no branching vessels, no texture, clean spheres), so "
            "this is a check that the whole pipeline still gives the same answer, not a measure of performance; "
            "`app/tests/eval.rs` regenerates the set and requires these numbers." + held_out_text(m, c))


def held_out_text(m, c):
    h = c.get("held_out_check")
    st = m.get("synthetic_test")
    if not h or not st:
        return ""
    return (f" The same `lucent eval` on the {h['scans']} held-out synthetic test scans above ({h['lesions']} nodules, "
            f"the shipped manifest) finds {fmt(h['sensitivity'])} of the nodules at {fmt(h['fps_per_scan'])} false "
            f"positives per scan, against {fmt(st['at_operating_threshold']['sensitivity'])} at "
            f"{fmt(st['at_operating_threshold']['fp_per_scan'])} in the table (read at the lower level, counted by "
            "this script).")


def real_data_dir(name):
    root = Path(os.environ.get("LUCENT_REAL_DATA") or (ROOT.parent / "shared" / "data"))
    d = root / name
    return d if d.is_dir() else None


def step_measure(args):
    """Lucent's nodule measurement on real data, without retraining: `lucent eval-nodule-measure` on
    the LIDC patches (summaries into metrics.json), and the measurements of the real ACRIN candidates
    re-read with the shipped manifest (the detector's candidates do not change; their sizes do)."""
    metrics_path = MODEL_DIR / "metrics.json"
    m = json.loads(metrics_path.read_text())
    patches = real_data_dir("ct-nodule-patches")
    if patches is not None:
        out = WORK / "measurement-lidc.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        r = subprocess.run([lucent_bin(log), "eval-nodule-measure", "--patches", str(patches), "--json", str(out)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"lucent eval-nodule-measure failed: {r.stderr[-2000:]}")
        passes = json.loads(out.read_text())
        m["measurement_real"] = {"seconds": round(time.time() - t0, 1),
                                 "passes": [{k: p[k] for k in ("slice_mm", "all", "half_a", "half_b")} for p in passes]}
        log(r.stdout)
    real = m.get("acrin_real")
    src = acrin_dir()
    if real and src is not None:
        cands, dt = run_lucent_read(src, MODEL_ID, MODEL_DIR.parent, WORK / "json" / "acrin-real-measure.json")
        for c in real["candidates"]:
            same = min(cands, key=lambda n: float(np.linalg.norm(np.asarray(n["center_mm"]) - c["center_mm"])))
            if np.linalg.norm(np.asarray(same["center_mm"]) - c["center_mm"]) < 0.5:
                c["measurement"], c["lung_rads"] = same["measurement"], same["lung_rads"]
            else:
                raise RuntimeError("the ACRIN candidates changed: run the evaluate step")
        real["measured_with"] = "bounded segmentation with openings (inference::ct::measure)"
        real["seconds"] = round(dt, 2)
    metrics_path.write_text(json.dumps(m, indent=2) + "\n")


def step_card(args):
    m = json.loads((MODEL_DIR / "metrics.json").read_text())
    t = m.get("timings") or {}
    ex = m.get("export") or {}
    hist = m.get("history") or []
    tp = m.get("training_patches") or {}
    st, at = m.get("synthetic_test"), m.get("acrin_inserted_test")
    real = m.get("acrin_real")
    if real and real.get("measured_with"):
        n_meas = sum(1 for c in real["candidates"] if c["measurement"])
        largest = max((c["measurement"]["mean_diameter_mm"] for c in real["candidates"] if c["measurement"]), default=0.0)
        measured_note = (f"Lucent measures every candidate with its bounded segmentation (see *Measurement on real "
                         f"nodules* below): {n_meas} of the {len(real['candidates'])} candidates are measured (largest mean "
                         f"diameter {largest:.1f} mm); the others join a vessel, the hilum, the pleura or the wall and are "
                         "shown as *not measurable*, never with a size. The detector's false positives remain: the "
                         "exam category still follows the largest measured candidate, so the categories on a real "
                         "scan are not meaningful until false positives are reduced.")
    else:
        measured_note = ("Lucent measured every candidate by region growing at -650 HU: on vessels, the hilum and the "
                         "mediastinum the growth ran to its 30 mm limit, so most of these false positives got mean "
                         "diameters of 40-60 mm and Lung-RADS 4B, and the exam category followed them. The candidates "
                         "and categories on a real scan are not meaningful.")
    mr = m.get("measurement_real")
    if mr:
        rows = []
        for p in mr["passes"]:
            for name, key in (("all scans", "all"), ("half A", "half_a"), ("half B", "half_b")):
                q = p[key]
                rows.append(f"| {p['slice_mm']:.1f} | {name} | {q['nodules']} | {q['not_measurable']} | {q['median_dice']:.3f} | "
                            f"{q['share_dice_at_least_0_7']:.2f} | {q['nodules_4_30_mm']} | {q['long_axis_mae_mm']:.2f} | "
                            f"{q['mean_diameter_mae_mm']:.2f} | {q['long_axis_vs_luna16_mae_mm']:.2f} | "
                            f"{q['median_abs_volume_error_pct']:.1f} |")
        def verdict(p):
            q = p["all"]
            ok = lambda v, t, le=True: "meets" if (v <= t if le else v >= t) else "misses"  # noqa: E731
            return (f"at {p['slice_mm']:.1f} mm the median Dice {q['median_dice']:.2f} {ok(q['median_dice'], 0.70, False)} "
                    f"0.70, the mean-diameter error {q['mean_diameter_mae_mm']:.2f} mm and the long-axis error "
                    f"{q['long_axis_mae_mm']:.2f} mm {ok(q['mean_diameter_mae_mm'], 1.5)} and "
                    f"{ok(q['long_axis_mae_mm'], 1.5)} 1.5 mm")
        share = max(p["all"]["not_measurable"] / max(p["all"]["nodules"], 1) for p in mr["passes"])
        targets_note = ("Against the targets (median Dice >= 0.70; diameter error <= 1.5 mm for 4-30 mm nodules): "
                        + "; ".join(verdict(p) for p in mr["passes"])
                        + f". Up to {100 * share:.0f}% of the real nodules (mostly juxtapleural and juxtavascular ones "
                        "the openings cannot free) are not measurable: shown so, never with a wrong size.")
        measurement_section = f"""## Measurement on real nodules

Lucent's measurement (`inference::ct::measure`, what `lucent read` and the workstation attach to each
candidate) is not this model's output and has no fitted weights: the voxels at or above -650 HU
connected to the candidate's centre inside a box (25 mm each way; 18 mm here, inside the 40 mm
patches); when that region reaches the box, openings of 1, 1.5, 2, 3 and 4 mm detach the vessels, pleura
or wall it ran into; if none does, or the region is longer than 30 mm without a mass-like core (solid
share >= 0.7 and at least a quarter of the sphere on its long axis), the candidate is **not measurable**.
Solid / part-solid / ground-glass comes from the HU inside the mask.

Checked on all 1,179 real LIDC-IDRI nodules of `ct-nodule-patches/` (600 scans; reference: the voxel mask),
at 1 mm and after averaging the slices to 2.5 mm (the mask averaged the same way), by
`lucent eval-nodule-measure --patches ../shared/data/ct-nodule-patches` ({mr['seconds']:.0f} s). The
halves split the scans by a hash of the series UID; the -650 HU level was chosen over -750 to -300 HU on
the first 300 nodules' half A, so half B is the cleaner figure. Not-measurable nodules count as Dice 0.
Long axis: on the axial slice of largest extent, Lucent's against the same definition on the reference
mask, for nodules of 4-30 mm by the LUNA16 diameter; beside it the Lung-RADS mean axial diameter, and
Lucent's long axis against the LUNA16 diameter (a reader's estimate, another definition).

| slices (mm) | scans | nodules | not measurable | median Dice | Dice >= 0.7 | 4-30 mm measured | long-axis MAE (mm) | mean-diameter MAE (mm) | long axis vs LUNA16 MAE (mm) | median abs. volume error (%) |
|---|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n\n" + targets_note + "\n"
    else:
        measurement_section = ""
    if real:
        lines = "\n".join(
            f"| {i + 1} | {c['score']:.2f} | {', '.join(f'{v:.0f}' for v in c['center_mm'])} | "
            f"{' x '.join(f'{v:.0f}' for v in c['size_mm'])} | "
            f"{fmt(c['measurement']['mean_diameter_mm'], 1) if c['measurement'] else 'not measurable'} | "
            f"{c['measurement']['nodule_type'] if c['measurement'] else 'n/a'} | {c['lung_rads'] or 'n/a'} | {c.get('where', 'n/a')} |"
            for i, c in enumerate(sorted(real["candidates"], key=lambda c: -c["score"])))
        w, we = real.get("where") or {}, real.get("where_at_eval_threshold") or {}
        # One in-lung candidate of the current model sits on a visible round opacity of the right lung
        # (looked at in acrin_candidates.png); said only while a candidate is still there.
        near = [c for c in real["candidates"] if np.linalg.norm(np.asarray(c["center_mm"]) - [-87.0, -51.0, -123.0]) < 10]
        opacity_note = (f"The candidate at {', '.join(f'{v:.0f}' for v in near[0]['center_mm'])} mm (score {near[0]['score']:.2f}) "
                        "lies on a round soft-tissue opacity of about 2 cm in the right upper lung, visible in the picture "
                        "(third and fourth tiles). It is a real structure of this patient's scan, possibly the known "
                        "tumour or part of it; the data set labels nothing, so it counts neither as a true nor as a "
                        "false positive here.") if near else ""
        real_section = f"""Lucent (`lucent read`, the shipped manifest, threshold {m['operating_threshold']}) on the real series
in `../shared/data/ct-acrin-chest` as it is, in {real['seconds']:.0f} s. The scan has **no labelled nodules**
and a right hilar mass; every candidate below is unverified, and none of them can be called a true
positive. At the evaluation threshold ({m['eval_threshold']}) it returns {real['candidates_at_eval_threshold']} candidates.
The patient-left half of this scan was used for training (as background, with nodules inserted), so this is not a
clean test of specificity either.

Where they lie (this script's HU masks: *lung* = the air spaces enclosed by the body, closed so that
vessels, nodules and the hilar mass count as lung; *body* = soft tissue, mediastinum, bone, abdomen;
*outside* = outside the body, i.e. on the blanket, gown or table): at the operating threshold
{w.get('lung', 0)} in the lungs, {w.get('body', 0)} in the body outside the lungs, {w.get('outside', 0)} outside the body
(at the evaluation threshold: {we.get('lung', 0)} / {we.get('body', 0)} / {we.get('outside', 0)}).
The number of candidates is capped by the manifest's max_candidates ({MAX_CANDIDATES}).

| # | score | centre (patient mm, LPS) | box (mm) | Lucent's measured mean diameter (mm) | type | Lung-RADS | where |
|---|---|---|---|---|---|---|---|
{lines if lines else '| - | no candidates | | | | | | |'}

{opacity_note}

![candidates on the real ACRIN CT](acrin_candidates.png)

{measured_note}
"""
    else:
        real_section = "Not measured (../shared/data/ct-acrin-chest was not available)."
        opacity_note = ""
    demo_rows = "\n".join(
        f"| {d['patient_id']} | {n['diameter_mm']:g} mm {n['kind'].replace('_', '-')} at {', '.join(f'{v:g}' for v in n['center_mm'])} | "
        f"{'no' if n['found_score'] is None else 'yes (' + format(n['found_score'], '.2f') + ')'} | {d['false_positives'] if j == 0 else ''} |"
        for d in m.get("demo") or [] for j, n in enumerate(d["nodules"]))
    low = m.get("froc_at_low_level") or {}
    low_parts = [f"{name}: CPM {fmt(low[k]['cpm'], 3)}, sensitivity "
                 + ", ".join(f"{fmt(low[k]['sensitivity_at_fp'][str(r)])} at {r:g}" for r in (1.0, 4.0, 8.0))
                 + f" FPs/scan, at most {fmt(low[k]['max_sensitivity'])} (at {fmt(low[k]['fp_per_scan_at_eval_threshold'], 1)} FPs/scan)"
                 for k, name in (("synthetic_test", "synthetic test"), ("acrin_inserted_test", "ACRIN + inserted")) if k in low]
    low_level_note = (
        f"The curves stop where the candidate level ({m['eval_threshold']}) stops producing candidates: rates above "
        f"the last FP/scan reached repeat its sensitivity. The same scans read at the lower level {low.get('level')} "
        f"give {'; '.join(low_parts)}. The numbers move with the level because Lucent's candidates are "
        "connected regions of the heatmap: at a lower level, a nodule's region can merge with a vessel's or the "
        "pleura's, and the merged box's centre misses the nodule."
    ) if low_parts else ""
    last = hist[-1] if hist else {}
    text = f"""# Model card: `{MODEL_ID}` {m['version']}

*Generated by `models/training/ldct_nodule.py card` from `metrics.json`; numbers are measured, not edited.*

**Research and demonstration only; not for diagnosis.** This detector was trained on synthetic nodules
inserted into procedural chest CTs and into one real low-dose CT. It has never seen a real nodule. It
exists so that Lucent can show real AI output on CT (candidates, measurements, Lung-RADS) offline.
Its FROC numbers below are on synthetic nodules only and do not describe clinical performance.

## Model

* Task: lung nodule candidates on chest CT: a per-voxel nodule probability on a 2 mm isotropic grid,
  which Lucent turns into candidates (connected regions above the threshold, box, peak score, 3-D NMS),
  keeping only those whose centre lies within {LUNG_REGION_MM:g} mm (in-plane) of the lungs
  (`postprocessing.lung_region_mm`: per axial slice, what the body encloses, grown by that much; this removes
  candidates on the table, blanket or gown, and deep in the mediastinum or abdomen).
* Architecture: a small 3-D U-Net written for this model (8-16-32 channels, 32^3 -> 8^3 with a dilated
  convolution and back, nearest upsampling, batch norm, sigmoid inside the graph);
  {ex.get('params', 'n/a')} parameters; ONNX opset 17, dynamic batch, {m['onnx_bytes'] / 1e6:.2f} MB.
* Input `volume` [N, 1, 32, 32, 32] (z, y, x) and output `heatmap` [N, 1, 32, 32, 32]; preprocessing
  declared in the manifest and done by Lucent (`inference/src/ct.rs`): trilinear resampling to 2 mm,
  HU window -1000..400 to [0, 1], 32^3 sliding windows with 25% overlap, overlapping outputs averaged.
* Operating threshold {m['operating_threshold']}: the score threshold giving at most
  {OPERATING_FP_PER_SCAN:g} false positive per scan on {m['synthetic_val']['scans'] if m.get('synthetic_val') else 'n/a'} synthetic validation scans
  (never below the evaluation threshold {m['eval_threshold']}); at most {MAX_CANDIDATES} candidates, NMS IoU {NMS_IOU}.
* Licence: MIT OR Apache-2.0 (weights trained by the Lucent project). The real CT used in training
  is TCIA ACRIN-NSCLC-FDG-PET (CC BY 3.0, DOI 10.7937/tcia.2019.30ilqfcl).

## Intended use

Research and demonstration of the Lucent workstation. **Not** for diagnosis, screening, triage or any
decision about a patient. Adults, chest CT only.

## Training data (how it was made)

* {tp.get('total', 'n/a')} patches of 32^3 voxels at 2 mm ({tp.get('with_nodules', 'n/a')} with nodules, {tp.get('nodules', 'n/a')} nodules:
  {', '.join(f'{k} {v}' for k, v in (tp.get('by_kind') or {}).items())}; placements
  {', '.join(f'{k} {v}' for k, v in (tp.get('by_placement') or {}).items())}); {tp.get('acrin', 'n/a')} of them from the real CT.
* **Procedural chests**: a numpy port of Lucent's CT generator (`pacs::synth::chest_phantom_hu`: body,
  fat, ribs, spine, heart, aorta, lungs with thin vessel sheets), with per-case variation (body and lung
  size, lung density -890..-800 HU, sheet count/width), branching tubular vessels (radius 0.9-4.5 mm,
  +25..+70 HU) from each hilum, Gaussian noise 8-45 HU (partly in-plane correlated), rendered on a
  random native grid (0.6-1.4 mm pixels, 1-3.3 mm slices) and resampled to 2 mm the way Lucent does.
* **Real CT**: the ACRIN low-dose CT (GE, 140 kVp, 19 mAs, 0.98 mm x 3.27 mm), decoded with dcmdjpls;
  training patches lie entirely in the **patient-left** half (x > 0 mm); the right half is held out.
* **Nodules**: ellipsoids (axes 0.8-1.2, random orientation) with lobulation, diameter 3-30 mm
  (log-uniform), one-pixel soft edge and slice-thickness partial volume, internal texture and noise:
  solid -20..+60 HU (50%), ground-glass -720..-450 HU (30%), part-solid (20%: ground glass with a solid
  core of 30-60% of the radius). Placement: free in the lung (45%), juxtapleural (30%: centre 0.35-0.95
  radii from the lung edge), juxtavascular (25%: touching a vessel). Denser structures stay visible
  through ground glass.
* Targets: a soft sphere of the nodule's radius (at least 3 mm) on the 2 mm grid; 30% of patches have
  no nodule and about 12-15% are centred outside the lungs (mediastinum, wall, bone; never outside the
  body).

## Training

`python models/training/ldct_nodule.py all` (see `models/training/README.md`): PyTorch 2.5.1 on CPU,
one thread, seed {SEED}; AdamW, one-cycle (max lr 3e-3), batch {BATCH}, {len(hist)} epochs; loss = BCE
(positive weight 20) + 0.5 soft Dice; augmentation: flips on all axes, in-plane transpose, +-30 HU
shifts. Last epoch: validation-patch Dice {fmt(last.get('val_dice'), 3)}, patch-level AUROC {fmt(last.get('val_patch_auroc'), 3)}.
Measured on this project's 2-core machine (shared with other jobs): data {fmt(t.get('data'), 0)} s, training
{fmt(t.get('train'), 0)} s, export {fmt(t.get('export'), 1)} s, evaluation {fmt(t.get('evaluate'), 0)} s in its last run
(`lucent read` of every held-out scan at both candidate levels: {fmt(m.get('held_out_reads_seconds_total'), 0)} s, read
again only when the model or the manifest changes; writing the scans a few minutes more, once).
ONNX Runtime agrees with PyTorch to {fmt(ex.get('ort_vs_torch_max_abs_diff'), 7)}.

## Evaluation: FROC on held-out scans

Every candidate was produced by **Lucent itself** (`lucent read --model ... --json`, the same Rust
resampling, tiling, thresholding, region and NMS code as the workstation) from the exported ONNX, run
with a copy of the manifest whose threshold is {m['eval_threshold']} and max_candidates {EVAL_MAX_CANDIDATES}; the FROC curve
sweeps the candidates' peak scores. A candidate is a hit when its centre lies within max(radius,
{HIT_MIN_MM:g} mm) of an inserted nodule's centre; further hits on an already found nodule are ignored; every
other candidate is a false positive (including real structures of the ACRIN scan such as its hilar mass).
CPM = mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 FPs per scan (95% interval: bootstrap over scans).
Held-out scans are whole volumes never used for training: synthetic chests from a separate seed (256 x 256,
1.37 mm pixels, 2.5 mm slices, 100-125 slices, 2-6 nodules each) and copies of the ACRIN CT with up to 5
nodules inserted in its right lung (its left half was seen in training, so its false positives there are
optimistic).

| scans | scans / nodules | 1/8 | 1/4 | 1/2 | 1 | 2 | 4 | 8 | CPM (95% CI) | max sens. |
|---|---|---|---|---|---|---|---|---|---|---|
{froc_table(m)}

{low_level_note}

{ci_set_text(m)}

At the operating threshold ({m['operating_threshold']}): synthetic test sensitivity {fmt(st['at_operating_threshold']['sensitivity']) if st else 'n/a'} at
{fmt(st['at_operating_threshold']['fp_per_scan'])  if st else 'n/a'} FPs per scan;
ACRIN + inserted nodules sensitivity {fmt(at['at_operating_threshold']['sensitivity']) if at else 'n/a'} at {fmt(at['at_operating_threshold']['fp_per_scan']) if at else 'n/a'} FPs per scan
(counted among the up to {EVAL_MAX_CANDIDATES} candidates of the evaluation reads; the shipped manifest returns at most
{MAX_CANDIDATES}, best first, so on a real scan the nodules compete with the false positives for those places).

Synthetic test sensitivity by subgroup (at the operating threshold, and at the threshold giving 4 FPs/scan):

| by | group | nodules | sens. at operating threshold | sens. at 4 FP/scan |
|---|---|---|---|---|
{subgroup_table(st) if st else ''}

{('ACRIN + inserted nodules, by subgroup:' + chr(10) + chr(10) + '| by | group | nodules | sens. at operating threshold | sens. at 4 FP/scan |' + chr(10) + '|---|---|---|---|---|' + chr(10) + subgroup_table(at)) if at else ''}

## Lucent's demo CTs

The two synthetic LDCT studies that `lucent --demo` shows (`app/src/demo.rs`, drawn by Lucent's Rust
generator `pacs::synth`, whose nodules are perfect spheres of uniform density, unlike the training
nodules), read with the shipped manifest (threshold {m['operating_threshold']}):

| patient | nodule | found (peak score) | false positives in the scan |
|---|---|---|---|
{demo_rows}

## The real ACRIN CT

{real_section}

{measurement_section}
## Speed

`lucent read --model {MODEL_ID}` (2 cores, ONNX Runtime CPU; includes DICOM loading, resampling, inference,
candidates, and Lucent's measurement and Lung-RADS of each candidate):
{', '.join(f'{v:.1f}' for v in m['lucent_read_seconds'].get('demo_512x512x120') or [])} s for the two 512 x 512 x 120 demo CTs (0.68 mm pixels, 2.5 mm
slices); median {fmt(m['lucent_read_seconds'].get('synthetic_256x256'), 1)} s for the 256 x 256 held-out scans and
{fmt(m['lucent_read_seconds'].get('acrin_512x512x135'), 1)} s for the 512 x 512 x 135 ACRIN copies (these two at the evaluation threshold,
up to {EVAL_MAX_CANDIDATES} candidates measured); {fmt(real['seconds'] if real else None, 1)} s for the real ACRIN series (JPEG-LS) at the
operating threshold.

## Known failure modes and limitations

* **Never trained or tested on real nodules.** The FROC numbers measure how well it finds *our synthetic*
  nodules; real nodules (spiculated, calcified, cavitary, perifissural, within consolidation) differ.
* **Small nodules**: at 2 mm a 3-5 mm nodule is one or two voxels; on the synthetic test set the
  3-6 mm band is found {fmt(st['by_subgroup_at_operating_threshold']['size_mm']['3-6']['sensitivity']) if st else 'n/a'} of the time at the operating threshold, against
  {fmt(st['by_subgroup_at_operating_threshold']['size_mm']['10-20']['sensitivity']) if st else 'n/a'} for 10-20 mm. A finer grid (1-1.5 mm) would cost 2.4-8 times the inference time.
* **Juxtapleural nodules** are found less often than free ones ({fmt(st['by_subgroup_at_operating_threshold']['placement']['juxtapleural']['sensitivity']) if st else 'n/a'} against
  {fmt(st['by_subgroup_at_operating_threshold']['placement']['free']['sensitivity']) if st else 'n/a'} on the synthetic test set; {fmt(at['by_subgroup_at_operating_threshold']['placement']['juxtapleural']['sensitivity']) if at else 'n/a'} over
  {at['by_subgroup_at_operating_threshold']['placement']['juxtapleural']['n'] if at else 'n/a'} in the ACRIN copies): their response merges with the chest wall's.
* **Structures outside the lungs on real CT.** On the real ACRIN scan many of the highest-scoring
  candidates lie outside the body (folds of the blanket or gown in front of the chest, whose
  partial-volume density looks like a small nodule in air) or in bone and soft tissue: the training
  data had no clothing, and its few patches outside the lungs came from a smooth phantom body and from
  half of one real scan. Nothing in this version restricts candidates to the lungs; a lung mask in
  Lucent's post-processing, or training negatives from outside the body, are the obvious next steps.
* **Real anatomy the phantom lacks** (vessel bifurcations seen end-on, fissures, airway walls, hila,
  mediastinal and hilar masses, diaphragm and chest-wall edges, motion and streak artefacts) produces
  false positives on real CT; the one real background it saw is half of one scan.
* Candidates are connected regions of the averaged heatmap: a nodule touching a vessel or the pleura may
  merge with its neighbour's response (box too large, centre shifted), and masses larger than 30 mm are
  outside the training range.
* The measurement and Lung-RADS category attached to each candidate are Lucent's, not this model's
  output (see *Measurement on real nodules*); juxtapleural and juxtavascular nodules are often not
  measurable.
* Scores are not calibrated probabilities; the threshold was chosen on synthetic validation scans.

## Reproduce

```sh
target/lucent-data/venv-train/bin/python models/training/ldct_nodule.py all
cargo test -p lucent-inference --test registry
```

sha256 of `{ONNX_NAME}`: `{m['sha256']}`.
"""
    (MODEL_DIR / "MODEL_CARD.md").write_text(text)
    log(f"wrote {MODEL_DIR / 'MODEL_CARD.md'}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["all", "data", "train", "export", "evaluate", "ci", "measure", "card"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--max-train-minutes", type=float, default=27.0, help="training time budget (the learning-rate schedule is squeezed into it when the machine is slow)")
    p.add_argument("--quick", action="store_true", help="smoke test of every step, under ldct-nodule-training-quick")
    args = p.parse_args()
    args.n_train, args.n_val_patches = N_TRAIN, N_VAL_PATCHES
    args.n_val_scans, args.n_test_scans, args.n_acrin_test = N_VAL_SCANS, N_TEST_SCANS, N_ACRIN_TEST
    if args.quick:
        global WORK, MODEL_DIR
        WORK = ROOT / "target" / "lucent-data" / "ldct-nodule-training-quick"
        MODEL_DIR = WORK / "models" / MODEL_ID
        args.n_train, args.n_val_patches, args.epochs = 48, 16, 1
        args.n_val_scans, args.n_test_scans, args.n_acrin_test = 1, 1, 1
    WORK.mkdir(parents=True, exist_ok=True)
    steps = {"data": step_data, "train": step_train, "export": step_export, "evaluate": step_evaluate,
             "ci": step_ci, "measure": step_measure, "card": step_card}
    for name in (list(steps) if args.step == "all" else [args.step]):
        log(f"step {name}")
        steps[name](args)


if __name__ == "__main__":
    main()
