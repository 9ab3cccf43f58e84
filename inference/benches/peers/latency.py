#!/usr/bin/env python3
"""Python peer of inference/benches/latency.rs: the same cases with onnxruntime 1.31.1 + numpy.

    latency.py CASE key=value...     (run by the benchmark; see latency.rs for the keys)

Cases: cxr-run (InferenceSession.run on the preprocessed tensor), cxr-pipeline (VOI, xrv
normalisation, centre crop in numpy, resize with skimage.transform.resize as torchxrayvision's
XRayResizer does, or a numpy separable bilinear + Gaussian if scikit-image is missing; run;
sigmoid and thresholds), cxr-png (the shipped lucent-cxr on a real PNG: PIL decode, the manifest's
mean/std preprocessing, run, sigmoid of scores and maps, thresholds), ct-denoise (slice batches), ct-detect (numpy trilinear resampling,
sliding windows, heatmap averaging, scipy.ndimage regions, greedy 3-D NMS).

Session: CPU provider, the given intra-op threads, 1 inter-op thread, sequential, arena on and
ORT_ENABLE_LAYOUT, as Lucent's ModelSession. Loading, session creation and warm-up are untimed.
Prints `TIMES name t,t,...`, `PEAK_KIB n`, `CHECK v v ...` and `INFO text` lines.
"""

import os
import resource
import sys
import time
import tomllib

# No BLAS is timed here; keep numpy's and scipy's OpenBLAS from starting a thread per core that
# would compete with ONNX Runtime's threads on a small machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

sk_resize = None
RESIZER = "numpy separable Gaussian + bilinear (scikit-image not installed)"


def import_resizer():
    """scikit-image (and scipy) only for the pipeline case, so the other cases import just numpy."""
    global sk_resize, RESIZER
    try:
        import skimage
        from skimage.transform import resize

        sk_resize = resize
        RESIZER = f"skimage {skimage.__version__} transform.resize (order=1, anti_aliasing, mode=constant)"
    except ImportError:  # the venv normally has it
        pass


def args_of(argv):
    return dict(a.split("=", 1) for a in argv)


def open_session(manifest_path, threads):
    with open(manifest_path, "rb") as f:
        manifest = tomllib.load(f)
    model = os.path.join(os.path.dirname(manifest_path), manifest["file"])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_LAYOUT
    so.enable_cpu_mem_arena = True
    so.log_severity_level = 3
    sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    return manifest, sess


def time_iters(warm, iters, f):
    for _ in range(warm):
        f()
    times, out = [], None
    for _ in range(iters):
        out = None  # free the previous result first, so two never coexist (peak RSS)
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return times, out


def print_times(name, times):
    print(f"TIMES {name} " + ",".join(f"{t:.9f}" for t in times))


# ---------------------------------------------------------------------------------------------
# CXR


def gaussian_kernel(sigma):
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * x * x / (sigma * sigma))
    return k / k.sum()


def resize_matrix(n_in, n_out, antialias):
    """Rows: output pixels; the Gaussian pre-filter (zero padding) then bilinear taps (zeros outside)."""
    scale = n_in / n_out
    c = (np.arange(n_out) + 0.5) * scale - 0.5
    i0 = np.floor(c).astype(np.int64)
    t = c - i0
    m = np.zeros((n_out, n_in))
    for idx, w in ((i0, 1.0 - t), (i0 + 1, t)):
        ok = (idx >= 0) & (idx < n_in)
        m[np.nonzero(ok)[0], idx[ok]] += w[ok]
    sigma = max(0.0, (scale - 1.0) / 2.0)
    if antialias and sigma > 0:
        k = gaussian_kernel(sigma)
        r = len(k) // 2
        g = np.zeros((n_in, n_in))
        for j, kw in enumerate(k):
            g += kw * np.eye(n_in, k=j - r)
        m = m @ g
    return m


def resize_224(x, size):
    if sk_resize is not None:
        return sk_resize(x, size, order=1, mode="constant", preserve_range=True, anti_aliasing=True).astype(np.float32)
    ry = resize_matrix(x.shape[0], size[0], True)
    rx = resize_matrix(x.shape[1], size[1], True)
    out = (ry @ x.astype(np.float64) @ rx.T).astype(np.float32)
    return np.clip(out, x.min(), x.max())


def cxr_preprocess(manifest, img, bits):
    p = manifest["preprocessing"]
    if p["normalization"]["kind"] == "mean_std":
        return cxr_preprocess_mean_std(p, img, bits)
    maxval = float(p["normalization"].get("maxval", 255.0))
    # 1. Full-range VOI (no window in the image) to [0, maxval], in float64 as Lucent does.
    top = float((1 << bits) - 1)
    x = (np.minimum(img, top) / top * maxval).astype(np.float32)
    # 3. torchxrayvision normalize(img, maxval).
    x = (2.0 * (x / np.float32(maxval)) - 1.0) * np.float32(1024.0)
    # 4-5. XRayCenterCrop, XRayResizer.
    return crop_resize(p, x)


def cxr_preprocess_mean_std(p, img, bits):
    """lucent-cxr's manifest: full-range VOI to [0, 1], (x - mean) / std, centre square crop, resize."""
    top = float((1 << bits) - 1)
    x = (np.minimum(img, top) / top).astype(np.float32)
    x = (x - np.float32(p["normalization"]["mean"][0])) / np.float32(p["normalization"]["std"][0])
    return crop_resize(p, x)


def crop_resize(p, x):
    """Centre square crop, then the manifest's resize; as a [1, 1, H, W] tensor."""
    h, w = x.shape
    side = min(h, w)
    x0, y0 = w // 2 - side // 2, h // 2 - side // 2
    x = x[y0 : y0 + side, x0 : x0 + side]
    return resize_224(x, tuple(p["resize"]["size"]))[None, None]


def cxr_post(manifest, outputs, names):
    logits = outputs[names.index("logits")][0]
    scores = 1.0 / (1.0 + np.exp(-logits))
    thresholds = np.array([l["threshold"] for l in manifest["labels"]], dtype=np.float32)
    return scores, scores >= thresholds


# ---------------------------------------------------------------------------------------------
# CT

CT_SPACING = (0.7, 0.7, 1.0)  # x, y, z mm, as latency.rs


def window_starts(n, size, overlap):
    if n <= size:
        return [0]
    stride = max(1, int(round(size * (1.0 - overlap))))
    starts = list(range(0, n - size, stride))
    starts.append(n - size)
    return starts


def lerp_axis(v, axis, n_out, step):
    n_in = v.shape[axis]
    c = np.clip(np.arange(n_out) * step, 0.0, n_in - 1)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    shape = [1, 1, 1]
    shape[axis] = n_out
    t = (c - i0).astype(np.float32).reshape(shape)
    a = np.take(v, i0, axis=axis)
    b = np.take(v, i1, axis=axis)
    return a + (b - a) * t


def nms(boxes, iou, max_keep):
    order = sorted(range(len(boxes)), key=lambda i: -boxes[i][2])
    keep = []

    def inter_union(a, b):
        lo = np.maximum(a[0], b[0])
        hi = np.minimum(a[1], b[1])
        inter = np.prod(np.maximum(hi - lo, 0.0))
        va = np.prod(np.maximum(a[1] - a[0], 0.0))
        vb = np.prod(np.maximum(b[1] - b[0], 0.0))
        u = va + vb - inter
        return inter / u if u > 0 else 0.0

    for i in order:
        if len(keep) >= max_keep:
            break
        if all(inter_union(boxes[k], boxes[i]) <= iou for k in keep):
            keep.append(i)
    return keep


def ct_detect(sess, manifest, vol):
    from scipy import ndimage  # imported on first use, i.e. in the untimed warm-up

    p = manifest["preprocessing"]
    lo, hi = p["hu_window"]["min"], p["hu_window"]["max"]
    ts = p["target_spacing_mm"]
    target = (ts["x"], ts["y"], ts["z"])
    ws = p["sliding_window"]["size"]
    win = (ws["x"], ws["y"], ws["z"])
    overlap = p["sliding_window"]["overlap"]
    nz, ny, nx = vol.shape
    dims = (nx, ny, nz)
    step = [target[a] / CT_SPACING[a] for a in range(3)]
    rd = [int(np.floor((dims[a] - 1) * CT_SPACING[a] / target[a])) + 1 for a in range(3)]
    v = vol.astype(np.float32)
    if any(abs(s - 1.0) > 1e-9 for s in step):
        v = lerp_axis(v, 2, rd[0], step[0])
        v = lerp_axis(v, 1, rd[1], step[1])
        v = lerp_axis(v, 0, rd[2], step[2])
    norm = (np.clip(v, lo, hi) - np.float32(lo)) / np.float32(hi - lo)
    del v
    pad = 0.0
    sx, sy, sz = (window_starts(rd[a], win[a], overlap) for a in range(3))
    starts = [(x, y, z) for z in sz for y in sy for x in sx]
    in_name = sess.get_inputs()[0].name
    heat = np.zeros((rd[2], rd[1], rd[0]), dtype=np.float32)
    count = np.zeros((rd[2], rd[1], rd[0]), dtype=np.uint16)
    batch = 2
    for c0 in range(0, len(starts), batch):
        chunk = starts[c0 : c0 + batch]
        data = np.full((len(chunk), 1, win[2], win[1], win[0]), pad, dtype=np.float32)
        for b, (x, y, z) in enumerate(chunk):
            block = norm[z : z + win[2], y : y + win[1], x : x + win[0]]
            data[b, 0, : block.shape[0], : block.shape[1], : block.shape[2]] = block
        out = sess.run(["heatmap"], {in_name: data})[0]
        for b, (x, y, z) in enumerate(chunk):
            dz, dy, dx = min(win[2], rd[2] - z), min(win[1], rd[1] - y), min(win[0], rd[0] - x)
            heat[z : z + dz, y : y + dy, x : x + dx] += out[b, 0, :dz, :dy, :dx]
            count[z : z + dz, y : y + dy, x : x + dx] += 1
    avg = np.where(count > 0, heat / np.maximum(count, 1), 0.0).astype(np.float32)
    label = manifest["labels"][0]
    mask = avg >= label["threshold"]
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    raw = []
    if n:
        peaks = ndimage.maximum(avg, labels, index=np.arange(1, n + 1))
        for sl, peak in zip(ndimage.find_objects(labels), peaks):
            mn = np.array([sl[2].start, sl[1].start, sl[0].start], dtype=np.float64) - 0.5
            mx = np.array([sl[2].stop - 1, sl[1].stop - 1, sl[0].stop - 1], dtype=np.float64) + 0.5
            raw.append((mn, mx, float(peak)))
    post = manifest["postprocessing"]
    half = post["min_size_mm"] / 2.0
    t = np.array(target)
    boxes = []
    for mn, mx, s in raw:
        a, b = mn * t, mx * t
        c = (a + b) / 2.0
        small = (b - a) < 2.0 * half
        a = np.where(small, c - half, a)
        b = np.where(small, c + half, b)
        boxes.append((a, b, s))
    keep = nms(boxes, post["nms_iou"], post["max_candidates"])
    sp = np.array(CT_SPACING)
    return [((boxes[i][0] / sp + boxes[i][1] / sp) / 2.0, boxes[i][2]) for i in keep]


def ct_denoise(sess, manifest, vol, batch):
    p = manifest["preprocessing"]
    lo, hi = np.float32(p["hu_window"]["min"]), np.float32(p["hu_window"]["max"])
    in_name, out_name = sess.get_inputs()[0].name, manifest["outputs"][0]["name"]
    out = vol.astype(np.float32)
    for z0 in range(0, out.shape[0], batch):
        x = out[z0 : z0 + batch]
        inp = ((np.clip(x, lo, hi) - lo) / (hi - lo))[:, None]
        y = sess.run([out_name], {in_name: inp})[0][:, 0]
        inside = (x >= lo) & (x <= hi)
        np.copyto(x, y * (hi - lo) + lo, where=inside)
    return out


# ---------------------------------------------------------------------------------------------


def main():
    case, a = sys.argv[1], args_of(sys.argv[2:])
    threads, warm, iters = int(a["threads"]), int(a["warm"]), int(a["iters"])
    manifest, sess = open_session(a["manifest"], threads)
    names = [o.name for o in sess.get_outputs()]
    if case == "cxr-run":
        x = np.fromfile(a["tensor"], dtype="<f4").reshape(1, 1, 224, 224)
        feed = {sess.get_inputs()[0].name: x}
        times, out = time_iters(warm, iters, lambda: sess.run(None, feed))
        print_times("run", times)
        check = [float(out[names.index("logits")].astype(np.float64).sum()),
                 float(out[names.index("maps")].astype(np.float64).sum())]
    elif case == "cxr-pipeline":
        import_resizer()
        w, h, bits = int(a["width"]), int(a["height"]), int(a["bits"])
        img = np.fromfile(a["image"], dtype="<u2").reshape(h, w)
        in_name = sess.get_inputs()[0].name
        stages = {"pre": [], "run": [], "post": []}

        def pipeline():
            t0 = time.perf_counter()
            x = cxr_preprocess(manifest, img, bits)
            t1 = time.perf_counter()
            out = sess.run(None, {in_name: x})
            t2 = time.perf_counter()
            r = cxr_post(manifest, out, names)
            t3 = time.perf_counter()
            return r, (t1 - t0, t2 - t1, t3 - t2), x

        for _ in range(warm):
            pipeline()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            (scores, _), parts, x = pipeline()
            times.append(time.perf_counter() - t0)
            for k, v in zip(("pre", "run", "post"), parts):
                stages[k].append(v)
        print_times("total", times)
        for k, v in stages.items():
            print_times(k, v)
        lucent = np.fromfile(a["tensor"], dtype="<f4").reshape(x.shape)
        print(f"INFO resize = {RESIZER}; preprocessed tensor vs Lucent's: max |diff| "
              f"{float(np.abs(lucent - x).max()):.2e} (values span {float(lucent.min()):.0f}..{float(lucent.max()):.0f})")
        check = [float(s) for s in scores]
    elif case == "cxr-png":
        import_resizer()
        from PIL import Image

        in_name = sess.get_inputs()[0].name

        def pipeline():
            img = np.asarray(Image.open(a["png"]).convert("L"), dtype=np.uint16)
            x = cxr_preprocess(manifest, img, 8)
            out = sess.run(None, {in_name: x})
            scores, flagged = cxr_post(manifest, out, names)
            maps = 1.0 / (1.0 + np.exp(-out[names.index("maps")][0]))
            return scores, maps >= 0.5

        times, (scores, _) = time_iters(warm, iters, pipeline)
        print_times("total", times)
        check = [float(s) for s in scores]
    elif case in ("ct-denoise", "ct-detect"):
        vol = np.fromfile(a["volume"], dtype="<i2").reshape(300, 512, 512)
        if case == "ct-denoise":
            batch = int(a["batch"])
            times, out = time_iters(warm, iters, lambda: ct_denoise(sess, manifest, vol, batch))
            print_times("total", times)
            check = [float(out.astype(np.float64).mean())]
        else:
            times, found = time_iters(warm, iters, lambda: ct_detect(sess, manifest, vol))
            print_times("total", times)
            check = [float(len(found))] + [s for _, s in found]
    else:
        raise SystemExit(f"unknown case {case!r}")
    print(f"PEAK_KIB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
    print("CHECK " + " ".join(f"{v:.6f}" for v in check))


if __name__ == "__main__":
    main()
