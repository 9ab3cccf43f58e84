#!/usr/bin/env python3
"""Train, export, evaluate and document Lucent's chest X-ray findings model (`lucent-cxr`).

    python3 -m venv target/lucent-data/venv-train
    target/lucent-data/venv-train/bin/pip install -r models/training/requirements.txt
    target/lucent-data/venv-train/bin/python models/training/cxr.py all

`all` runs the steps below in order; each can also run alone (they read what the previous one wrote
under target/lucent-data/cxr-training/):

  data      generate synthetic radiographs with `lucent synth-cxr` (the demo's own generator,
            pacs::synth::cxr) for train / validation / test, and cache them preprocessed exactly as
            the manifest declares (VOI full range, centre square crop, bilinear antialiased resize
            to 256, mean/std normalisation: Lucent's inference/src/cxr.rs)
  train     train a small CNN (image-level head + per-finding maps) with a fixed seed on 1 thread
  export    write models/lucent-cxr/lucent-cxr.onnx (opset 17, dynamic batch), checked against torch
  evaluate  score validation, test and the 125 real NIH radiographs through `lucent score-cxr`
            (Lucent's own Rust pipeline), pick thresholds on validation, measure AUROC on test and
            on NIH, write the manifest models/lucent-cxr/lucent-cxr.toml and metrics.json
  card      write models/lucent-cxr/MODEL_CARD.md from metrics.json

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
from common import ROOT, auroc, fmt, lucent_bin, real_data, record_time  # noqa: E402


WORK = ROOT / "target" / "lucent-data" / "cxr-training"
MODEL_DIR = ROOT / "models" / "lucent-cxr"
MODEL_ID = "lucent-cxr"
VERSION = "0.1.0"
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
MIN_SPECIFICITY = 0.95  # operating points: best Youden J on validation with at least this specificity
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


def step_train(args):
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
            loss = cls + 0.5 * seg
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            sums += [float(cls), float(seg)]
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
    torch.save(model.state_dict(), WORK / "lucent-cxr.pt")
    (WORK / "history.json").write_text(json.dumps(history, indent=2))
    record_time(WORK, "train", time.time() - t0)


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
# export


def step_export(args):
    import onnx
    import onnxruntime as ort
    import torch

    t0 = time.time()
    torch.set_num_threads(args.threads)
    model = build_model()
    model.load_state_dict(torch.load(WORK / "lucent-cxr.pt", weights_only=True))
    model.eval()
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    tmp = WORK / "export.onnx"
    torch.onnx.export(
        model, torch.zeros(1, 1, INPUT, INPUT), str(tmp), opset_version=17,
        input_names=["image"], output_names=["logits", "maps"],
        dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}, "maps": {0: "N"}},
        do_constant_folding=True, dynamo=False,
    )
    m = onnx.load(str(tmp))
    m.producer_name = "lucent/models/training/cxr.py"
    m.producer_version = VERSION
    m.doc_string = "Lucent CXR findings model (trained on synthetic radiographs). Research and demonstration only."
    onnx.checker.check_model(m, full_check=True)
    data = m.SerializeToString(deterministic=True)
    (MODEL_DIR / ONNX_NAME).write_bytes(data)
    # Check the file against torch on validation images, batch of 3 (dynamic batch).
    x = np.load(WORK / "val.npz")["images"][:3].astype(np.float32)[:, None]
    sess = ort.InferenceSession(str(MODEL_DIR / ONNX_NAME), providers=["CPUExecutionProvider"])
    logits, maps = sess.run(None, {"image": x})
    with torch.no_grad():
        tl, tm = model(torch.from_numpy(x))
    diff = max(float(np.abs(logits - tl.numpy()).max()), float(np.abs(maps - tm.numpy()).max()))
    log(f"exported {len(data)} bytes; ONNX Runtime vs torch max abs difference {diff:.2e}")
    if diff > 1e-3:
        sys.exit(f"ONNX and torch disagree by {diff}")
    record_time(WORK, "export", time.time() - t0)


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


def operating_point(y, s):
    """Threshold with the best Youden J among those with specificity >= MIN_SPECIFICITY."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    best = (-1.0, 0.5)
    for t in np.unique(np.round(s, 3)):
        sens = float((s[y] >= t).mean())
        spec = float((s[~y] < t).mean())
        if spec >= MIN_SPECIFICITY and sens + spec - 1.0 > best[0]:
            best = (sens + spec - 1.0, float(t))
    return min(max(best[1], 0.01), 0.99)


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


def write_manifest(thresholds, provenance_extra="", shown=None):
    data = (MODEL_DIR / ONNX_NAME).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    n_train = SPLITS["train"][1]
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
    text = f'''# Generated by models/training/cxr.py: do not edit by hand. See MODEL_CARD.md.
id = "{MODEL_ID}"
name = "Lucent CXR findings (trained on synthetic radiographs)"
version = "{VERSION}"
file = "{ONNX_NAME}"
sha256 = "{sha}"
license = "MIT OR Apache-2.0"
provenance = "Trained from scratch by models/training/cxr.py (PyTorch 2.5.1, seed {SEED}, CPU) on {n_train} synthetic PA chest radiographs made by Lucent's own generator (pacs::synth::cxr via `lucent synth-cxr`); no real patient images were used for training or for choosing thresholds. {len(data)} bytes.{provenance_extra}"
intended_use = "Research and demonstration only; not for diagnosis. Flags nodule, consolidation, pleural effusion, interstitial opacity and pneumothorax on adult PA chest radiographs, for demonstrating Lucent. Trained only on synthetic images: its performance on real radiographs is low (see MODEL_CARD.md)."
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


# ---------------------------------------------------------------------------------------------
# evaluate


def lesion_table(split):
    """{id: [lesion dicts]} from `lucent synth-cxr`'s cases.jsonl."""
    out = {}
    with open(WORK / split / "cases.jsonl") as f:
        for line in f:
            d = json.loads(line)
            out[d["id"]] = d["lesions"]
    return out


def step_evaluate(args):
    import onnxruntime as ort

    t0 = time.time()
    write_manifest([0.5] * len(LABELS))
    metrics = {"model": MODEL_ID, "version": VERSION}
    scores = {}
    for split in ("val", "test"):
        rows = read_labels(split)
        paths = [WORK / split / "images" / f"{r['id']}.png" for r in rows]
        log(f"{split}: scoring {len(paths)} images with `lucent score-cxr`")
        ts = time.time()
        by_name = score_with_lucent(paths, WORK / f"scores_{split}.csv", 12, args.threads)
        metrics[f"lucent_seconds_per_image_{split}"] = round((time.time() - ts) / len(paths), 4)
        s = np.stack([by_name[p.name] for p in paths])
        y = np.array([[float(r[l["key"]]) for l in LABELS] for r in rows])
        scores[split] = (rows, s, y)

    # Train/inference agreement: Python preprocessing + ONNX Runtime vs Lucent on test images.
    rows, s_test, y_test = scores["test"]
    sess = ort.InferenceSession(str(MODEL_DIR / ONNX_NAME), providers=["CPUExecutionProvider"])
    diffs = []
    for r, lucent_scores in zip(rows[:32], s_test[:32]):
        stored, _ = read_png(WORK / "test" / "images" / f"{r['id']}.png")
        x = lucent_preprocess(stored, 12)[None, None]
        logits, _ = sess.run(None, {"image": x})
        diffs.append(float(np.abs(1 / (1 + np.exp(-logits[0])) - lucent_scores).max()))
    metrics["python_vs_lucent_max_score_difference"] = max(diffs)
    log(f"Python preprocessing + ONNX Runtime vs Lucent: max score difference {max(diffs):.2e} on 32 images")

    # Operating points on validation.
    _, s_val, y_val = scores["val"]
    thresholds = [round(operating_point(y_val[:, k], s_val[:, k]), 3) for k in range(len(LABELS))]
    metrics["thresholds"] = {l["key"]: t for l, t in zip(LABELS, thresholds)}

    # Synthetic hold-out.
    synth = {}
    for k, l in enumerate(LABELS):
        sens, spec = sens_spec(y_test[:, k], s_test[:, k], thresholds[k])
        synth[l["key"]] = {
            "auroc": auroc(y_test[:, k], s_test[:, k]),
            "auroc_ci95": auroc_ci(y_test[:, k], s_test[:, k]),
            "sensitivity": sens,
            "specificity": spec,
            "positives": int(y_test[:, k].sum()),
            "negatives": int((1 - y_test[:, k]).sum()),
        }
    metrics["synthetic_test"] = synth
    metrics["synthetic_test_normals_flagged"] = float(
        np.mean([(s >= np.array(thresholds)).any() for s, yy in zip(s_test, y_test) if yy[-1] == 0])
    )
    # Sensitivity by lesion size on the synthetic test set.
    lesions = lesion_table("test")
    groups = {
        "nodule": [("diameter < 10 mm", lambda l: l["size_mm"] < 10), ("10-20 mm", lambda l: 10 <= l["size_mm"] < 20),
                   (">= 20 mm", lambda l: l["size_mm"] >= 20)],
        "effusion": [("meniscus < 35 mm (blunting)", lambda l: l["size_mm"] < 35),
                     (">= 35 mm", lambda l: l["size_mm"] >= 35)],
        "pneumothorax": [("apical rim < 15 mm", lambda l: l["size_mm"] < 15),
                         (">= 15 mm", lambda l: l["size_mm"] >= 15)],
    }
    by_size = {}
    for key, bins in groups.items():
        k = [l["key"] for l in LABELS].index(key)
        by_size[key] = {}
        for name, pred in bins:
            hits = [s_test[i, k] >= thresholds[k] for i, r in enumerate(rows)
                    for les in lesions[r["id"]] if les["finding"] == key and pred(les)]
            by_size[key][name] = {"n": len(hits), "sensitivity": float(np.mean(hits)) if hits else None}
    metrics["synthetic_sensitivity_by_size"] = by_size

    # Localisation on the synthetic test set: the map's peak inside the finding's mask.
    data = np.load(WORK / "test.npz")
    inside = {f: [] for f in FINDINGS}
    for i in range(len(rows)):
        if not data["labels"][i, :5].any():
            continue
        _, maps = sess.run(None, {"image": data["images"][i : i + 1].astype(np.float32)[:, None]})
        for k, f in enumerate(FINDINGS):
            if data["labels"][i, k] == 1:
                peak = np.unravel_index(np.argmax(maps[0, k]), maps[0, k].shape)
                inside[f].append(bool(data["masks"][i, k][peak] > 127))
    metrics["synthetic_map_peak_in_mask"] = {f: float(np.mean(v)) for f, v in inside.items() if v}

    # Real data: the 125 NIH ChestX-ray14 radiographs.
    real = real_data("cxr-nih-dev", "labels.csv")
    if real is not None:
        with open(real / "labels.csv") as f:
            nih_rows = list(csv.DictReader(f))
        paths = [real / r["image"] for r in nih_rows]
        log(f"NIH: scoring {len(paths)} real radiographs with `lucent score-cxr`")
        by_name = score_with_lucent(paths, WORK / "scores_nih.csv", 8, args.threads)
        s_nih = np.stack([by_name[p.name] for p in paths])
        keys = [l["key"] for l in LABELS]
        nih = []
        for key, nih_name, columns in NIH_TARGETS:
            k = keys.index(key)
            if columns is None:
                y = np.array([1 - int(r["no_finding"]) for r in nih_rows])
            else:
                y = np.array([int(any(r[c] == "1" for c in columns)) for r in nih_rows])
            sens, spec = sens_spec(y, s_nih[:, k], thresholds[k])
            nih.append({
                "model_label": LABELS[k]["name"],
                "nih_label": nih_name,
                "positives": int(y.sum()),
                "negatives": int(len(y) - y.sum()),
                "auroc": auroc(y, s_nih[:, k]),
                "auroc_ci95": auroc_ci(y, s_nih[:, k]),
                "sensitivity": sens,
                "specificity": spec,
            })
        metrics["nih"] = nih
        metrics["nih_images"] = len(paths)
        metrics["nih_views"] = {v: sum(r["view"] == v for r in nih_rows) for v in sorted({r["view"] for r in nih_rows})}
        flagged = (s_nih >= np.array(thresholds)).mean(axis=0)
        metrics["nih_fraction_flagged"] = {l["key"]: float(f) for l, f in zip(LABELS, flagged)}
        normal = np.array([r["no_finding"] == "1" for r in nih_rows])
        metrics["nih_no_finding_flagged_any"] = float((s_nih[normal] >= np.array(thresholds)).any(axis=1).mean())
    else:
        log("NIH data not found (../shared/data/cxr-nih-dev or $LUCENT_REAL_DATA): real-data metrics skipped")
        metrics["nih"] = None

    history = WORK / "history.json"
    if history.exists():
        metrics["training_history"] = json.loads(history.read_text())
    metrics["counts"] = {split: n for split, (_, n) in SPLITS.items()}
    metrics["shown_by_default"] = shown_labels(metrics["nih"])
    sha, size = write_manifest(thresholds, shown=metrics["shown_by_default"])
    metrics["sha256"] = sha
    metrics["onnx_bytes"] = size
    record_time(WORK, "evaluate", time.time() - t0)
    timings = WORK / "timings.json"
    metrics["timings_seconds"] = json.loads(timings.read_text()) if timings.exists() else {}
    (MODEL_DIR / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log(f"wrote {MODEL_DIR / (MODEL_ID + '.toml')} and metrics.json")


def step_manifest(args):
    """Rewrites the manifest from metrics.json (thresholds, and which labels are shown by default
    from the real-data AUROCs) without retraining or re-evaluating."""
    metrics = json.loads((MODEL_DIR / "metrics.json").read_text())
    metrics["shown_by_default"] = shown_labels(metrics.get("nih"))
    sha, _ = write_manifest([metrics["thresholds"][l["key"]] for l in LABELS], shown=metrics["shown_by_default"])
    if sha != metrics.get("sha256"):
        raise RuntimeError("the ONNX file changed since metrics.json was written: run the evaluate step")
    (MODEL_DIR / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log(f"wrote {MODEL_DIR / (MODEL_ID + '.toml')}: shown by default {metrics['shown_by_default']}")


# ---------------------------------------------------------------------------------------------
# card


def fmt_ci(ci):
    return "" if not ci else f" ({ci[0]:.2f}-{ci[1]:.2f})"


def step_card(args):
    m = json.loads((MODEL_DIR / "metrics.json").read_text())
    shown = m.get("shown_by_default") or {}
    hidden = [l["name"] for l in LABELS if shown.get(l["key"]) is False]
    shown_note = (("**Not shown by default.** A label whose AUROC on these real images (its first NIH label above) is "
                   f"under {SHOWN_MIN_REAL_AUROC:.2f} is marked `shown_by_default = false` in the manifest: "
                   + ", ".join(hidden) + ". The workstation lists their scores greyed as *not validated* and draws them only when the reader "
                   "turns them on; they are never drafted into the report; `lucent read` prints them with a note. The "
                   "product never shows, unasked, a finding this model cannot back.") if hidden else "")
    t = m.get("timings_seconds", {})
    synth_rows = "\n".join(
        f"| {l['name']} | {v['positives']} / {v['negatives']} | {fmt(v['auroc'], 3)}{fmt_ci(v['auroc_ci95'])} "
        f"| {m['thresholds'][l['key']]} | {fmt(v['sensitivity'])} | {fmt(v['specificity'])} |"
        for l in LABELS for v in [m["synthetic_test"][l["key"]]]
    )
    size_rows = "\n".join(
        f"| {key} | {name} | {v['n']} | {fmt(v['sensitivity'])} |"
        for key, bins in m["synthetic_sensitivity_by_size"].items() for name, v in bins.items()
    )
    loc = ", ".join(f"{k} {v:.2f}" for k, v in m["synthetic_map_peak_in_mask"].items())
    if m.get("nih"):
        nih_rows = "\n".join(
            f"| {r['model_label']} | {r['nih_label']} | {r['positives']} / {r['negatives']} "
            f"| {fmt(r['auroc'])}{fmt_ci(r['auroc_ci95'])} | {fmt(r['sensitivity'])} | {fmt(r['specificity'])} |"
            for r in m["nih"]
        )
        views = ", ".join(f"{n} {v}" for v, n in m["nih_views"].items())
        def name(r):
            return f"{r['model_label']} vs NIH {r['nih_label'].split(' (')[0]} ({fmt(r['auroc'])})"

        def listed(items):
            return (", ".join(items[:-1]) + " and " + items[-1]) if len(items) > 1 else items[0]

        # Compared as printed (two decimals), so that "0.50-0.76" never counts as above chance.
        above = [name(r) for r in m["nih"] if r["auroc_ci95"] and round(r["auroc_ci95"][0], 2) > 0.5]
        below = [name(r) for r in m["nih"] if r["auroc_ci95"] and round(r["auroc_ci95"][1], 2) < 0.5]
        nih_reading = (
            "**Read these numbers as: the model does not transfer to real radiographs.** An AUROC of 0.5 is "
            "chance; an interval that includes 0.5 is no evidence of real-data skill. "
            + (f"Only {listed(above)} {'has an interval' if len(above) == 1 else 'have intervals'} above 0.5, "
               "on 10-16 positives: weak evidence at best, and not enough to use the model on real images. "
               if above else "No finding has an interval above 0.5. ")
            + (f"{listed(below)} {'is' if len(below) == 1 else 'are'} significantly *below* chance: the synthetic "
               "pattern the model learned is absent from, or anti-correlated with, what the NIH label describes. "
               if below else "")
            + "The operating thresholds, chosen on synthetic data, flag most real images."
        )
        nih_section = f"""### Real radiographs: 125 NIH ChestX-ray14 images

Scored by Lucent (`lucent score-cxr`, the same pipeline as `lucent read`) on the 125 development
images in `../shared/data/cxr-nih-dev` ({views}; 1024 x 1024 8-bit PNGs), against the NIH
text-mined labels (about 90% accurate). These images were **not** used for training or for choosing
thresholds. The NIH set has no interstitial-opacity label; *Infiltration* is the closest and is not
the same thing. With 10-16 positives per finding, the 95% bootstrap intervals are wide.

| model label | NIH label | positives / negatives | AUROC (95% CI) | sensitivity | specificity |
|---|---|---|---|---|---|
{nih_rows}

At the operating thresholds, {m['nih_no_finding_flagged_any']:.0%} of the 16 NIH images labelled *No finding* get at
least one positive finding. {nih_reading}

{shown_note}"""
    else:
        nih_section = "### Real radiographs\n\nNot measured (the NIH data was not available when the card was written)."
    history = m.get("training_history", [])
    last = history[-1] if history else {}
    text = f"""# Model card: `lucent-cxr` {m['version']}

*Generated by `models/training/cxr.py card` from `metrics.json`; numbers are measured, not edited.*

**Research and demonstration only; not for diagnosis.** This model was trained entirely on synthetic
images made by Lucent's own procedural generator. It exists so that Lucent can show real AI output
on its demo studies offline. On real chest radiographs it is at or near chance for most findings
(see below), and even on synthetic images it finds nodules and pneumothoraces poorly.

## Model

* Task: multi-label findings on a frontal chest radiograph: **Nodule, Consolidation, Pleural effusion,
  Interstitial opacity, Pneumothorax**, and **Abnormal** (any of them); an image-level probability per
  label and a per-label 64 x 64 probability map (classification + segmentation design).
* Architecture: a small CNN written for this model: five stages of strided 3 x 3 convolutions with
  batch norm (16-32-64-96-128 channels, 256 -> 8 pixels) and a feature pyramid back to 64 x 64 for
  the maps; each label's image-level logit is the log-sum-exp (smooth maximum) of its own map plus a
  linear term on average- and max-pooled features, so that the image labels train the maps too.
  About 0.5 M parameters; ONNX opset 17, dynamic batch, {m['onnx_bytes'] / 1e6:.1f} MB.
* Input: `image` [N, 1, 256, 256]; preprocessing (declared in the manifest and done by Lucent): the
  image's VOI window (else its full stored range) to [0, 1], MONOCHROME1 inverted, (x - 0.5) / 0.25,
  centre square crop, bilinear resize with anti-aliasing (scikit-image's definition).
* Outputs: `logits` [N, 6] (sigmoid gives the probability), `maps` [N, 6, 64, 64] (sigmoid; contours
  drawn at {MAP_THRESHOLD}).
* Operating thresholds: per label, the best Youden index on the synthetic validation set among
  thresholds with specificity >= {MIN_SPECIFICITY}: {', '.join(f"{l['name']} {m['thresholds'][l['key']]}" for l in LABELS)}.
* Licence: MIT OR Apache-2.0 (the weights were trained by the Lucent project on data it generated).

## Intended use

Research and demonstration of the Lucent workstation: showing what an AI second reader's output
looks like (scores, thresholds, heat maps, contours) on the bundled synthetic demo studies.

**Not intended** for diagnosis, triage, screening, or any decision about a patient; not for real
radiographs except to study how a synthetic-only model fails. Not validated on children, lateral
views, portable AP films, images with devices or lines, or any population.

## Training data

* {m['counts']['train']} training, {m['counts']['val']} validation and {m['counts']['test']} test images, all
  synthetic, written by `lucent synth-cxr` (the same generator, `pacs::synth::cxr`, that draws
  the demo radiographs, so the model sees exactly the demo's distribution) with seeds
  `lucent-cxr-train`, `lucent-cxr-val`, `lucent-cxr-test`; 512 pixels wide, 12-bit, about half on a
  35 x 43 cm detector (0.68 mm pixels, as the demo's 2048 x 2500 at 0.17 mm), the rest on 43 x 43 cm.
* The generator projects a procedural adult chest: body outline, lung fields with depth profiles,
  mediastinum, trachea and bronchi, a left-bulging heart (cardiothoracic ratio 0.38-0.52),
  hemidiaphragms, posterior and anterior ribs, clavicles, vertebrae, humeral heads, branching
  vessels, optional breast shadows and gastric bubble, side markers; patient size, inspiration,
  rotation (+-4 degrees), shift, exposure, console processing (range compression, detail gain, tone
  curve) and quantum noise vary per image.
* Labels: about 30% normal, the rest one finding (60%) or two. Lesion ranges: nodule 5-30 mm, round
  or lobulated, density 0.5-1 (faint to solid); consolidation 40-110 mm patches in a zone (sharp at
  the minor fissure in the right upper zone, air bronchograms in about half); effusion meniscus
  12-150 mm above the costophrenic angle (30% small blunting), 15% bilateral; interstitial
  reticular or reticulonodular texture over lower zones 70-170 mm high, 80% bilateral; pneumothorax
  apical rim 6-50 mm running 40-100% down the lateral wall. Masks come from the generator.
* No real images were used for training, augmentation or threshold selection.

## Training

`python models/training/cxr.py all` (see `models/training/README.md`): PyTorch 2.5.1 on CPU, one
thread, seed {SEED}, deterministic algorithms; AdamW, one-cycle learning rate (max 2e-3), batch {BATCH},
{len(history)} epochs; loss = BCE on the image labels + 0.5 x (BCE + soft Dice) on the
maps, with positive weights {CLS_POS_WEIGHT} (labels) and {MAP_POS_WEIGHT} (maps) in label order;
augmentation: affine (scale 0.9-1.1, +-6 degrees, +-5% shift), gamma, contrast, brightness, blur
and noise. Measured on this project's 2-core machine: data generation and preprocessing
{fmt(t.get('data'), 0)} s, training {fmt(t.get('train'), 0)} s, export {fmt(t.get('export'), 1)} s, evaluation {fmt(t.get('evaluate'), 0)} s.
Last epoch: validation AUROC {', '.join(f'{k} {v:.3f}' for k, v in last.get('val_auroc', {}).items())}.

## Evaluation

All scores below were produced by Lucent itself (`lucent score-cxr`, the Rust pipeline that
`lucent read` and the workstation use), from the exported ONNX file. Python preprocessing + ONNX
Runtime agrees with Lucent to {m['python_vs_lucent_max_score_difference']:.1e} (largest score difference over 32 test images), so training
and inference see the same input.

### Synthetic hold-out ({m['counts']['test']} images, seed `lucent-cxr-test`, never trained on)

| label | positives / negatives | AUROC (95% CI) | threshold | sensitivity | specificity |
|---|---|---|---|---|---|
{synth_rows}

{m['synthetic_test_normals_flagged']:.0%} of the normal synthetic test images get at least one positive finding.

Sensitivity by lesion size (synthetic test set, at the operating thresholds):

| finding | size | lesions | sensitivity |
|---|---|---|---|
{size_rows}

Localisation: fraction of positive synthetic test images whose map peak lies inside the true mask:
{loc}.

These numbers describe the model on *the generator's* images only: it has learned the generator's
consolidation, effusion and interstitial texture, and nodules and pneumothoraces only partly. They say
nothing about real radiographs: the generator's anatomy, textures and lesions are simplified, and the
test set comes from the same generator.

{nih_section}

## Known failure modes and limitations

* **Domain gap.** Real radiographs differ from the phantom in anatomy, texture, processing, devices,
  positioning and disease appearance; the model was never shown one. Expect false positives and
  false negatives on real images at any threshold; the NIH numbers above measure this.
* **Nodules and pneumothoraces are weak even on synthetic images** (AUROC {fmt(m['synthetic_test']['nodule']['auroc'])} and
  {fmt(m['synthetic_test']['pneumothorax']['auroc'])}; see the size table): most nodules under 20 mm and most pneumothoraces are
  missed at the operating thresholds. Nodules compete with rib crossings and vessels of the same size
  and contrast, a pneumothorax's pleural line is thinner than one input pixel (256 pixels over
  35-43 cm), and this small network, trained for minutes on one CPU thread, only began to learn them
  in its last epochs (see the training history in `metrics.json`). Consolidation, effusion (except
  small blunting) and the generator's interstitial texture are learned well.
* The demo cases use lesions of these kinds that the model does flag (a 22 mm dense nodule, a 35 mm
  pneumothorax rim chosen among a few tried); they show what the output looks like, not how often the
  model is right.
* Interstitial opacity is learned as the generator's reticular texture; real interstitial disease,
  edema, and breast or soft-tissue shadows can look different. NIH *Infiltration* is not the same
  finding.
* Trained on PA-like adult geometry only; AP, lateral, paediatric, rotated or cropped images, and
  images with lines, tubes, pacemakers, or text burned in are out of distribution.
* Scores are not calibrated probabilities for any real population; thresholds were chosen on
  synthetic validation data.
* The maps are coarse (64 x 64 over the centre square) and outline where the model responds, not a
  measured lesion boundary.

## Reproduce

```sh
python3 -m venv target/lucent-data/venv-train
target/lucent-data/venv-train/bin/pip install -r models/training/requirements.txt
target/lucent-data/venv-train/bin/python models/training/cxr.py all
cargo test -p lucent-inference --test registry
```

sha256 of `{ONNX_NAME}`: `{m['sha256']}`.
"""
    (MODEL_DIR / "MODEL_CARD.md").write_text(text)
    log(f"wrote {MODEL_DIR / 'MODEL_CARD.md'}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["all", "data", "train", "export", "evaluate", "manifest", "card"])
    p.add_argument("--threads", type=int, default=1, help="PyTorch / ONNX Runtime threads (default 1)")
    p.add_argument("--synth-threads", type=int, default=1, help="`lucent synth-cxr` worker threads (default 1)")
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: a few images, one epoch, everything under target/lucent-data/cxr-training-quick")
    args = p.parse_args()
    if args.quick:
        global WORK, MODEL_DIR, SPLITS
        WORK = ROOT / "target" / "lucent-data" / "cxr-training-quick"
        MODEL_DIR = WORK / "models" / MODEL_ID
        SPLITS = {k: (seed, max(n // 20, 40)) for k, (seed, n) in SPLITS.items()}
        args.epochs = 1
    WORK.mkdir(parents=True, exist_ok=True)
    steps = {"data": step_data, "train": step_train, "export": step_export, "evaluate": step_evaluate,
             "card": step_card}
    if args.step == "manifest":
        step_manifest(args)
        return
    order = list(steps) if args.step == "all" else [args.step]
    for name in order:
        log(f"step {name}")
        steps[name](args)


if __name__ == "__main__":
    main()
