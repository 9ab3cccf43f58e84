#!/usr/bin/env python3
"""Export torchxrayvision's DenseNet-121 ("densenet121-res224-all") to ONNX with a Lucent manifest.

For users who have the published weights: Lucent cannot download them (they live on GitHub
releases, outside the package registries), and does not ship them. This script turns them into a
model folder Lucent loads like any other:

    <out>/xrv-densenet121-res224-all.onnx    opset 17, input `image` [N,1,224,224], output `logits` [N,18]
    <out>/xrv-densenet121-res224-all.toml    the manifest: 18 labels with torchxrayvision's operating
                                              thresholds (`op_threshs`), its exact preprocessing, sha256

Usage (the PyPI packages `torch`, `torchvision` and `torchxrayvision==1.3.5`; see README.md):

    python models/import/xrv_densenet121.py --weights-file \
        nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt
    python models/import/xrv_densenet121.py --random-weights --out DIR   # contract test, no weights

Without `--out` the model goes to Lucent's user models folder
(`$XDG_DATA_HOME/lucent/models`, else `~/.local/share/lucent/models`), which `lucent` scans.

`--random-weights` builds the same architecture with torch's seeded random initialisation: the
result proves the export, the manifest and Lucent's pipeline end to end, and says everywhere
that it predicts nothing (`test_only = true`, id `xrv-densenet121-res224-random`).

What the manifest encodes, from torchxrayvision 1.3.5's own code:
* preprocessing: the image's own VOI to [0, 255], `xrv.datasets.normalize(img, 255)` =
  `(2 * x / 255 - 1) * 1024`, `XRayCenterCrop` (centred square), `XRayResizer(224)` =
  `skimage.transform.resize(..., mode="constant", preserve_range=True)` (anti-aliased bilinear);
* output: the classifier's logits. torchxrayvision applies `sigmoid` and then `op_norm`, which
  maps each label's operating threshold to 0.5; Lucent applies the sigmoid and compares with the
  threshold itself, which flags exactly the same images.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

LABELS_NOTE = "torchxrayvision `densenet121-res224-all` pathologies, in its output order"


def user_models_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "lucent" / "models"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_model(args):
    import torch
    import torchxrayvision as xrv

    spec = xrv.models.model_urls["densenet121-res224-all"]
    labels = list(spec["labels"])
    thresholds = [float(t) for t in spec["op_threshs"]]
    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None, num_classes=len(labels))
    if args.weights_file:
        path = Path(args.weights_file)
        if not path.is_file():
            sys.exit(f"no weights file at {path}: download {spec['weights_url']} where you have access, then pass it")
        # As torchxrayvision loads it (a pickled model; trust only the file from its release).
        saved = torch.load(path, map_location="cpu", weights_only=False)
        for mod in saved.modules():
            if not hasattr(mod, "_non_persistent_buffers_set"):
                mod._non_persistent_buffers_set = set()
        model.load_state_dict(saved.state_dict())
        weights_note = f"weights file {path.name} (sha256 {sha256(path)})"
    else:
        weights_note = "RANDOM weights (torch.manual_seed(0)); not trained"
    model.eval()
    return model, labels, thresholds, weights_note, xrv.__version__


def logits_module(model):
    """The classifier's logits, without torchxrayvision's resolution check and op_norm."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            return self.m.classifier(self.m.features2(image))

    return Logits(model).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights-file", help="torchxrayvision's densenet121-res224-all .pt file")
    src.add_argument("--random-weights", action="store_true", help="random weights: a contract test only")
    ap.add_argument("--out", help="model folder to write (default: Lucent's user models folder)")
    args = ap.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model, labels, thresholds, weights_note, xrv_version = build_model(args)
    model_id = "xrv-densenet121-res224-all" if args.weights_file else "xrv-densenet121-res224-random"
    out = Path(args.out) if args.out else user_models_dir() / model_id
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / f"{model_id}.onnx"

    wrapper = logits_module(model)
    example = torch.zeros(1, 1, 224, 224)
    torch.onnx.export(
        wrapper,
        (example,),
        str(onnx_path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        do_constant_folding=True,
    )

    # The ONNX graph computes what torchxrayvision computes (before op_norm), on xrv-range input.
    rng = np.random.default_rng(0)
    probe = rng.uniform(-1024, 1024, size=(2, 1, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = wrapper(torch.from_numpy(probe)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"image": probe})[0]
    diff = float(np.abs(got - expected).max())
    if diff > 1e-4 * max(1.0, float(np.abs(expected).max())):
        sys.exit(f"ONNX and torch disagree: max |diff| = {diff}")
    # Lucent's rule (sigmoid(logit) >= op_thresh) flags what xrv's own forward (sigmoid, then
    # op_norm with the thresholds) puts at >= 0.5.
    model.op_threshs = torch.tensor(thresholds)
    with torch.no_grad():
        normed = model(torch.from_numpy(probe)).numpy()
    lucent_flags = 1.0 / (1.0 + np.exp(-got)) >= np.array(thresholds)
    if not np.array_equal(lucent_flags, normed >= 0.5):
        sys.exit("the manifest thresholds do not reproduce torchxrayvision's op_norm decisions")

    size = onnx_path.stat().st_size
    random = not args.weights_file
    name = "torchxrayvision DenseNet-121 (densenet121-res224-all)" + (" with RANDOM weights" if random else "")
    intended = (
        "TEST ONLY: randomly initialised weights; proves the export, manifest and pipeline, predicts nothing."
        if random
        else "Research only; not for diagnosis. torchxrayvision's published multi-dataset chest X-ray classifier "
        "(Cohen et al., arXiv:2002.02497) for frontal adult chest radiographs; see its documentation for "
        "its training data and limits."
    )
    lines = [
        "# Generated by models/import/xrv_densenet121.py: do not edit by hand.",
        f"id = {toml_str(model_id)}",
        f"name = {toml_str(name)}",
        f'version = "{xrv_version}"',
        f"file = {toml_str(onnx_path.name)}",
        f'sha256 = "{sha256(onnx_path)}"',
        'license = "Apache-2.0 (torchxrayvision code and weights)"',
        "provenance = "
        + toml_str(
            f"torchxrayvision {xrv_version} DenseNet-121 exported to ONNX opset 17 by models/import/xrv_densenet121.py "
            f"from {weights_note}; ONNX vs torch max |diff| {diff:.2e}; {size} bytes."
        ),
        f"intended_use = {toml_str(intended)}",
        f"test_only = {'true' if random else 'false'}",
        'modalities = ["CR", "DX"]',
        'body_parts = ["CHEST"]',
        "",
        "[[inputs]]",
        'name = "image"',
        'dtype = "float32"',
        "shape = [-1, 1, 224, 224]",
        "",
        "[preprocessing]",
        'kind = "cxr"',
        'voi = "image"',
        'monochrome1 = "invert"',
        'crop = "center_square"',
        'resize = { size = [224, 224], interpolation = "bilinear", antialias = true }',
        'normalization = { kind = "xrv", maxval = 255.0 }',
        "",
        "[[outputs]]",
        'name = "logits"',
        'dtype = "float32"',
        f"shape = [-1, {len(labels)}]",
        'kind = "multilabel_logits"',
        "",
        f"# {LABELS_NOTE}; thresholds are its op_threshs (on the sigmoid probability).",
    ]
    for label, threshold in zip(labels, thresholds):
        lines += ["", "[[labels]]", f"name = {toml_str(label)}", f"threshold = {threshold!r}"]
    manifest = out / f"{model_id}.toml"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {onnx_path} ({size} bytes) and {manifest}; ONNX vs torch max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
