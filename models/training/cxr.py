#!/usr/bin/env python3
"""Train Lucent's chest X-ray findings model (`lucent-cxr`): synthetic pretraining here, then the fit
to real radiographs, its cross-validation, export, evaluation and card in `cxr_real.py`.

    python3 -m venv target/lucent-data/venv-train
    target/lucent-data/venv-train/bin/pip install -r models/training/requirements.txt
    target/lucent-data/venv-train/bin/python models/training/cxr.py all --threads 2

Steps of this file (they write under target/lucent-data/cxr-training/):

  data      generate synthetic radiographs with `lucent synth-cxr` (the demo's own generator,
            pacs::synth::cxr) for train / validation / test, and cache them preprocessed exactly as
            the manifest declares (VOI full range, centre square crop, bilinear antialiased resize
            to 256, mean/std normalisation: Lucent's inference/src/cxr.rs)
  pretrain  train the small CNN (image-level head + per-finding maps) on them with a fixed seed:
            the starting point of the real-data fit (lucent-cxr-synthetic.pt)

`all` runs both, then cxr_real.py's prepare, cv, train, export, evaluate and card (see there).
Nothing here downloads anything; the real images are read from ../shared/data (or
$LUCENT_REAL_DATA) and never copied.
"""

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage.transform import resize as sk_resize  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, auroc, lucent_bin, record_time  # noqa: E402


WORK = ROOT / "target" / "lucent-data" / "cxr-training"
MODEL_DIR = ROOT / "models" / "lucent-cxr"
MODEL_ID = "lucent-cxr"
ONNX_NAME = "lucent-cxr.onnx"

INPUT = 256  # model input, pixels
MAP = 64  # per-finding maps, pixels
SYNTH_SIZE = 512  # columns of the generated PNGs
MEAN, STD = 0.5, 0.25  # normalisation after the VOI to [0, 1]
SEED = 0
EPOCHS = 7
BATCH = 32
SPLITS = {
    "train": ("lucent-cxr-train", 2800),
    "val": ("lucent-cxr-val", 500),
    "test": ("lucent-cxr-test", 600),
}
FINDINGS = ["nodule", "consolidation", "effusion", "interstitial_opacity", "pneumothorax"]
LABELS = [
    {"key": "nodule", "name": "Nodule", "radlex": "RID50149"},
    {"key": "consolidation", "name": "Consolidation", "radlex": "RID43255", "snomed": "95436008"},
    {"key": "effusion", "name": "Pleural effusion", "radlex": "RID34539", "snomed": "60046008"},
    {"key": "interstitial_opacity", "name": "Interstitial opacity"},
    {"key": "pneumothorax", "name": "Pneumothorax", "radlex": "RID5352", "snomed": "36118008"},
    {"key": "abnormal", "name": "Abnormal"},
]
MAP_THRESHOLD = 0.5
# Real data: which NIH ChestX-ray14 labels stand for each of ours (Infiltration is only the closest).
NIH_TARGETS = [
    ("nodule", "Nodule", ["Nodule"]),
    ("nodule", "Nodule or Mass", ["Nodule", "Mass"]),
    ("consolidation", "Consolidation", ["Consolidation"]),
    ("effusion", "Effusion", ["Effusion"]),
    ("pneumothorax", "Pneumothorax", ["Pneumothorax"]),
    ("interstitial_opacity", "Infiltration (closest NIH label)", ["Infiltration"]),
    ("abnormal", "any finding (not `no_finding`)", None),
]


def log(msg):
    print(f"[cxr {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def lucent_env():
    """Lucent looks for models in $LUCENT_MODELS first: point it at the folder this script writes
    when that is not the repository's models/ (which a binary built here finds by itself)."""
    if MODEL_DIR.parent == ROOT / "models" and not os.environ.get("LUCENT_BIN"):
        return dict(os.environ)
    return {**os.environ, "LUCENT_MODELS": str(MODEL_DIR.parent)}


# ---------------------------------------------------------------------------------------------
# Preprocessing: exactly what Lucent does for this manifest (inference/src/cxr.rs).


def lucent_preprocess(stored, bits_stored):
    """VOI full range to [0, 1], mean/std, centre square crop, antialiased bilinear resize."""
    top = float((1 << bits_stored) - 1)
    x = (np.minimum(stored.astype(np.float64), top) / top).astype(np.float32)
    x = (x - np.float32(MEAN)) / np.float32(STD)
    x = centre_square(x)
    return sk_resize(
        x, (INPUT, INPUT), order=1, mode="constant", cval=0, clip=True, preserve_range=True, anti_aliasing=True
    ).astype(np.float32)


def centre_square(a):
    h, w = a.shape[:2]
    side = min(h, w)
    y0, x0 = h // 2 - side // 2, w // 2 - side // 2
    return a[y0 : y0 + side, x0 : x0 + side]


def read_png(path):
    """A PNG's stored values and Bits Stored as Lucent reads them (8-bit: 8; 16-bit: given)."""
    im = Image.open(path)
    if im.mode in ("I;16", "I;16B", "I"):
        return np.array(im).astype(np.uint16), None
    return np.array(im.convert("L")).astype(np.uint16), 8


def mask_target(mask_path):
    m = np.array(Image.open(mask_path)).astype(np.float32) / 255.0
    m = centre_square(m)
    return sk_resize(m, (MAP, MAP), order=1, mode="constant", anti_aliasing=True, preserve_range=True)


def read_labels(split):
    with open(WORK / split / "labels.csv") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# data


def step_data(args):
    t0 = time.time()
    exe = lucent_bin(log)
    for split, (seed, count) in SPLITS.items():
        out = WORK / split
        have = len(read_labels(split)) if (out / "labels.csv").exists() else 0
        if have != count:
            log(f"{split}: generating {count} radiographs with `lucent synth-cxr` (seed {seed!r})")
            subprocess.run(
                [exe, "synth-cxr", "--out", str(out), "--count", str(count), "--seed", seed,
                 "--size", str(SYNTH_SIZE), "--threads", str(args.synth_threads)],
                check=True,
            )
        cache = WORK / f"{split}.npz"
        if cache.exists():
            continue
        rows = read_labels(split)
        log(f"{split}: preprocessing {len(rows)} images as the manifest declares")
        images = np.zeros((len(rows), INPUT, INPUT), np.float16)
        masks = np.zeros((len(rows), len(FINDINGS), MAP, MAP), np.uint8)
        labels = np.zeros((len(rows), len(LABELS)), np.float32)
        for i, r in enumerate(rows):
            stored, _ = read_png(out / "images" / f"{r['id']}.png")
            images[i] = lucent_preprocess(stored, int(r["bits_stored"]))
            for k, f in enumerate(FINDINGS):
                labels[i, k] = float(r[f])
                if r[f] == "1":
                    masks[i, k] = np.round(mask_target(out / "masks" / f"{r['id']}_{f}.png") * 255).astype(np.uint8)
            labels[i, -1] = float(r["abnormal"])
        np.savez(cache, images=images, masks=masks, labels=labels)
    record_time(WORK, "data", time.time() - t0)


# ---------------------------------------------------------------------------------------------
# The network


def build_model():
    import math

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def cbr(i, o, stride=1):
        return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    class LucentCxr(nn.Module):
        """Encoder to 8x8 (strided 3x3 convolutions), a feature pyramid back to 64x64 for the
        per-finding maps; each label's image-level logit is its map's log-sum-exp (a smooth
        maximum, so the image label trains the map too) plus a linear term on pooled features."""

        def __init__(self, widths=(16, 32, 64, 96, 128), n=len(LABELS)):
            super().__init__()
            w = widths
            self.e1 = nn.Sequential(cbr(1, w[0], 2), cbr(w[0], w[0]))  # 128
            self.e2 = nn.Sequential(cbr(w[0], w[1], 2), cbr(w[1], w[1]))  # 64
            self.e3 = nn.Sequential(cbr(w[1], w[2], 2), cbr(w[2], w[2]))  # 32
            self.e4 = nn.Sequential(cbr(w[2], w[3], 2), cbr(w[3], w[3]))  # 16
            self.e5 = nn.Sequential(cbr(w[3], w[4], 2), cbr(w[4], w[4]))  # 8
            self.l5, self.l4 = nn.Conv2d(w[4], 32, 1), nn.Conv2d(w[3], 32, 1)
            self.l3, self.l2 = nn.Conv2d(w[2], 32, 1), nn.Conv2d(w[1], 32, 1)
            self.decode = cbr(32, 32)
            self.seg = nn.Conv2d(32, n, 1)
            self.cls = nn.Linear(2 * w[4], n)

        def forward(self, x):
            x2 = self.e2(self.e1(x))
            x3 = self.e3(x2)
            x4 = self.e4(x3)
            x5 = self.e5(x4)
            p = F.interpolate(self.l5(x5), scale_factor=2.0, mode="nearest") + self.l4(x4)
            p = F.interpolate(p, scale_factor=2.0, mode="nearest") + self.l3(x3)
            p = F.interpolate(p, scale_factor=2.0, mode="nearest") + self.l2(x2)
            maps = self.seg(self.decode(p))
            pooled = torch.cat([x5.mean(dim=(2, 3)), x5.amax(dim=(2, 3))], dim=1)
            # Smooth maximum over the map: (1/r) log(mean(exp(r * map))), r = 4.
            flat = maps.flatten(2)
            lse = (torch.logsumexp(4.0 * flat, dim=2) - math.log(flat.shape[2])) / 4.0
            return self.cls(pooled) + lse, maps

    return LucentCxr()


def augment(x, m, gen):
    """Random pose, exposure, sharpness and noise; `x` normalised [N,1,256,256], `m` [N,C,64,64]."""
    import math

    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)  # noqa: E731
    scale, angle = u(0.9, 1.1), u(-6.0, 6.0) * math.pi / 180.0
    tx, ty = u(-0.05, 0.05), u(-0.05, 0.05)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), padding_mode="border",
                      align_corners=False)
    m = F.grid_sample(m, F.affine_grid(theta, list(m.shape), align_corners=False), align_corners=False)
    v = (x * STD + MEAN).clamp(0.0, 1.0)
    gamma = torch.exp(u(-0.3, 0.3)).view(n, 1, 1, 1)
    v = v.clamp_min(1e-4) ** gamma
    mean = v.mean(dim=(1, 2, 3), keepdim=True)
    v = (v - mean) * u(0.75, 1.25).view(n, 1, 1, 1) + mean + u(-0.1, 0.1).view(n, 1, 1, 1)
    sigma = float(u(0.0, 0.8)[0])
    if sigma > 0.4:
        r = 3
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
        k = k / k.sum()
        v = F.conv2d(F.pad(v, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        v = F.conv2d(F.pad(v, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    v = v + torch.randn(v.shape, generator=gen) * u(0.0, 0.02).view(n, 1, 1, 1)
    return (v - MEAN) / STD, m


def seg_targets(m):
    """Five finding masks plus their union (the `Abnormal` map); the thin or tiny ones (nodule,
    pneumothorax) widened by one map pixel so that their channels get enough positive pixels."""
    import torch
    import torch.nn.functional as F

    wide = F.max_pool2d(m, 3, stride=1, padding=1)
    m = torch.cat([wide[:, :1], m[:, 1:4], wide[:, 4:5]], dim=1)
    return torch.cat([m, m.amax(dim=1, keepdim=True)], dim=1)


# Positive weights per label (nodule, consolidation, effusion, interstitial, pneumothorax, abnormal):
# small findings weigh more, on the image labels and on the maps.
CLS_POS_WEIGHT = [2.0, 1.0, 1.0, 1.0, 2.0, 1.0]
MAP_POS_WEIGHT = [10.0, 3.0, 3.0, 3.0, 5.0, 3.0]


def losses(logits, maps, y, t):
    import torch
    import torch.nn.functional as F

    cls = F.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.tensor(CLS_POS_WEIGHT))
    pos_weight = torch.tensor(MAP_POS_WEIGHT).view(1, -1, 1, 1)
    bce = F.binary_cross_entropy_with_logits(maps, t, pos_weight=pos_weight)
    p = torch.sigmoid(maps)
    inter = (p * t).sum(dim=(2, 3))
    dice = 1.0 - (2.0 * inter + 1.0) / (p.sum(dim=(2, 3)) + t.sum(dim=(2, 3)) + 1.0)
    present = (t.sum(dim=(2, 3)) > 0).float()
    dice = (dice * present).sum() / present.sum().clamp_min(1.0)
    return cls, bce + dice


# ---------------------------------------------------------------------------------------------
# train


def optimizer_step(opt, sched, cls, seg):
    """One step on cls + 0.5 seg (the image-label and map losses); returns both as floats."""
    loss = cls + 0.5 * seg
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    return np.array([float(cls), float(seg)])


def step_pretrain(args):
    """Synthetic pretraining: the starting point of the real-data fit (cxr_real.py)."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(SEED)
    t0 = time.time()
    train = np.load(WORK / "train.npz")
    val = np.load(WORK / "val.npz")
    x_all = torch.from_numpy(train["images"])
    m_all = torch.from_numpy(train["masks"])
    y_all = torch.from_numpy(train["labels"])
    n = x_all.shape[0]
    model = build_model()
    params = sum(p.numel() for p in model.parameters())
    log(f"training {params} parameters on {n} images, {args.epochs} epochs, {args.threads} thread(s)")
    steps = args.epochs * (n // BATCH)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.15)
    history = []
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        te = time.time()
        sums = np.zeros(2)
        for b in range(n // BATCH):
            idx = perm[b * BATCH : (b + 1) * BATCH]
            x = x_all[idx].float().unsqueeze(1)
            m = m_all[idx].float() / 255.0
            x, m = augment(x, m, gen)
            logits, maps = model(x)
            cls, seg = losses(logits, maps, y_all[idx], seg_targets(m))
            sums += optimizer_step(opt, sched, cls, seg)
        val_probs = predict(model, val["images"])
        aucs = [auroc(val["labels"][:, k], val_probs[:, k]) for k in range(len(LABELS))]
        entry = {
            "epoch": epoch + 1,
            "train_cls_loss": round(sums[0] / (n // BATCH), 4),
            "train_seg_loss": round(sums[1] / (n // BATCH), 4),
            "val_auroc": {LABELS[k]["key"]: round(a, 4) for k, a in enumerate(aucs)},
            "seconds": round(time.time() - te, 1),
        }
        history.append(entry)
        log(json.dumps(entry))
    torch.save(model.state_dict(), WORK / "lucent-cxr-synthetic.pt")
    (WORK / "history_synthetic.json").write_text(json.dumps(history, indent=2))
    record_time(WORK, "pretrain", time.time() - t0)


def predict(model, images, batch=64):
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.asarray(images[i : i + batch], dtype=np.float32)).unsqueeze(1)
            logits, _ = model(x)
            out.append(torch.sigmoid(logits).numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------
# Metrics


def auroc_ci(y, s, reps=2000):
    """Percentile bootstrap 95% interval (fixed seed)."""
    rng = np.random.default_rng(SEED)
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    vals = []
    for _ in range(reps):
        i = rng.integers(0, len(y), len(y))
        a = auroc(y[i], s[i])
        if a is not None:
            vals.append(a)
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))] if vals else None


def sens_spec(y, s, t):
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    sens = float((s[y] >= t).mean()) if y.any() else None
    spec = float((s[~y] < t).mean()) if (~y).any() else None
    return sens, spec


def read_scores(path):
    """`lucent score-cxr` output: {file name: [score per label]}."""
    with open(path) as f:
        rows = list(csv.reader(f))
    header = rows[0][1:]
    assert header == [l["name"] for l in LABELS], header
    return {Path(r[0]).name: np.array([float(v) for v in r[1:]]) for r in rows[1:]}


def score_with_lucent(paths, out, bits_stored, threads):
    subprocess.run(
        [lucent_bin(log), "score-cxr", "--model", MODEL_ID, "--out", str(out), "--png-bits-stored", str(bits_stored),
         "--threads", str(threads), *[str(p) for p in paths]],
        check=True,
        env=lucent_env(),
    )
    return read_scores(out)


# ---------------------------------------------------------------------------------------------
# Manifest


# A label is shown by default only when its AUROC on the real NIH development images (its first,
# closest NIH label) reaches this; the card says which are not.
SHOWN_MIN_REAL_AUROC = 0.70


def shown_labels(nih):
    """Per label key: shown by default (True) unless its real-data AUROC is measured and below
    SHOWN_MIN_REAL_AUROC. Without real data every label is shown, and the card says so."""
    shown = {l["key"]: True for l in LABELS}
    for l in LABELS:
        rows = [r for r in (nih or []) if r["model_label"] == l["name"]]
        if rows and rows[0]["auroc"] is not None:
            shown[l["key"]] = rows[0]["auroc"] >= SHOWN_MIN_REAL_AUROC
    return shown


def write_manifest(thresholds, shown=None, *, name, version, provenance, intended_use):
    """Writes the model's manifest (the contract Lucent loads it by): `shown` maps label keys to
    whether the workstation shows them by default."""
    data = (MODEL_DIR / ONNX_NAME).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    labels = []
    for l, t in zip(LABELS, thresholds):
        lines = [f'[[labels]]\nname = "{l["name"]}"']
        if "radlex" in l:
            lines.append(f'radlex = "{l["radlex"]}"')
        if "snomed" in l:
            lines.append(f'snomed = "{l["snomed"]}"')
        lines.append(f"threshold = {t}")
        lines.append(f"map_threshold = {MAP_THRESHOLD}")
        if shown is not None and not shown[l["key"]]:
            lines.append("shown_by_default = false")
        labels.append("\n".join(lines) + "\n")
    text = f'''# Generated by models/training/cxr_real.py: do not edit by hand. See MODEL_CARD.md.
id = "{MODEL_ID}"
name = "{name}"
version = "{version}"
file = "{ONNX_NAME}"
sha256 = "{sha}"
license = "MIT OR Apache-2.0"
provenance = "{provenance} {len(data)} bytes."
intended_use = "{intended_use}"
test_only = false
modalities = ["CR", "DX"]
body_parts = ["CHEST"]

[[inputs]]
name = "image"
dtype = "float32"
shape = [-1, 1, {INPUT}, {INPUT}]

[preprocessing]
kind = "cxr"
voi = "image"
monochrome1 = "invert"
crop = "center_square"
resize = {{ size = [{INPUT}, {INPUT}], interpolation = "bilinear", antialias = true }}
normalization = {{ kind = "mean_std", mean = [{MEAN}], std = [{STD}] }}

[[outputs]]
name = "logits"
dtype = "float32"
shape = [-1, {len(LABELS)}]
kind = "multilabel_logits"

[[outputs]]
name = "maps"
dtype = "float32"
shape = [-1, {len(LABELS)}, {MAP}, {MAP}]
kind = "segmentation_per_label"
activation = "sigmoid"

''' + "\n".join(labels)
    (MODEL_DIR / f"{MODEL_ID}.toml").write_text(text)
    return sha, len(data)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["all", "data", "pretrain"])
    p.add_argument("--threads", type=int, default=1, help="PyTorch / ONNX Runtime threads (default 1)")
    p.add_argument("--synth-threads", type=int, default=1, help="`lucent synth-cxr` worker threads (default 1)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="pretraining epochs")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: a few images, one epoch, everything under target/lucent-data/cxr-training-quick")
    args = p.parse_args()
    if args.quick:
        configure_quick()
        args.epochs = 1
    WORK.mkdir(parents=True, exist_ok=True)
    steps = {"data": step_data, "pretrain": step_pretrain}
    order = list(steps) if args.step == "all" else [args.step]
    for name in order:
        log(f"step {name}")
        steps[name](args)
    if args.step == "all":
        import cxr_real

        cxr_real.run(["prepare", "cv", "train", "export", "evaluate", "card"], quick=args.quick,
                     threads=max(args.threads, 2))


def configure_quick():
    """--quick: a smoke test of every step on a few images, in its own folder (not a model to ship)."""
    global WORK, MODEL_DIR, SPLITS
    WORK = ROOT / "target" / "lucent-data" / "cxr-training-quick"
    MODEL_DIR = WORK / "models" / MODEL_ID
    SPLITS = {k: (seed, max(n // 20, 40)) for k, (seed, n) in SPLITS.items()}


if __name__ == "__main__":
    main()
