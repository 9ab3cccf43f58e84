"""Generate the pydicom reference that Lucent's decoder conformance test compares against.

This is a one-time, hand-run generator; CI never runs it. It walks the pydicom
test corpora (the `pydicom-data` wheel's `data_store/data/` files and the
`pydicom` wheel's `pydicom/data/test_files/` tree), decodes every file with
pydicom and writes one JSON object per file to `pydicom_reference.jsonl`.

Pinned: pydicom 3.0.2, pydicom-data 1.0.0, with numpy, pylibjpeg,
pylibjpeg-libjpeg, pylibjpeg-openjpeg and pylibjpeg-rle as pixel plugins.

Regenerate (from the repository root, after extracting the wheels under
target/lucent-data/ and installing the packages into its venv):

    target/lucent-data/venv/bin/python tests/reference/pydicom_reference.py \\
        --pydicom-data target/lucent-data/pydicom-data \\
        --test-files target/lucent-data/pydicom-test-files \\
        --out tests/reference/pydicom_reference.jsonl

Each line has `file` ("pydicom-data/<rel>" or "pydicom/<rel>") and `ok`.
Failures carry `error` ("<ExceptionType>: <message[:120]>"). Successes carry the
image header fields and statistics of the first frame's values `v` (float64):
the modality-LUT output for one sample per pixel, or pydicom's default decoded
array for colour (YBR_FULL/YBR_FULL_422 converted to RGB; `photometric_out`
says which colour space `v` is in). `v` is flattened in C order (colour stays
interleaved R,G,B per pixel). `sum_sha` is the SHA-256 of
`np.round(v, 3).astype('<f4').tobytes()`; `samples` are `[i, v[i]]` for
`i = (k * 2654435761) % v.size`, k in 0..63.
"""

import argparse
import hashlib
import json
import signal
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, as_pixel_options, get_decoder

PER_FILE_TIMEOUT_S = 300


def _timeout(signum, frame):
    raise TimeoutError(f"no result within {PER_FILE_TIMEOUT_S} s")


def describe(path):
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames") or 1)
    spp = int(ds.SamplesPerPixel)
    pi = str(ds.PhotometricInterpretation)
    frame = arr[0] if frames > 1 else arr
    pi_out = pi
    if spp == 1:
        v = apply_modality_lut(frame, ds).astype(np.float64)
    else:
        v = frame.astype(np.float64)
        # `pixel_array` drops the decoder's metadata; decode frame 0 again the
        # same way to learn the colour space pydicom actually returned.
        ts = ds.file_meta.TransferSyntaxUID
        _, meta = get_decoder(ts).as_array(ds, index=0, **as_pixel_options(ds))
        pi_out = str(meta.get("photometric_interpretation", pi))
    v = v.ravel(order="C")
    n = v.size
    return {
        "transfer_syntax": str(ds.file_meta.get("TransferSyntaxUID", "")) or None,
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "frames": frames,
        "samples_per_pixel": spp,
        "photometric": pi,
        "photometric_out": pi_out,
        "bits_allocated": int(ds.BitsAllocated),
        "single_frame": frames == 1,
        "min": float(v.min()),
        "max": float(v.max()),
        "mean": float(v.mean()),
        "sum_sha": hashlib.sha256(np.round(v, 3).astype("<f4").tobytes()).hexdigest(),
        "samples": [[i, float(v[i])] for i in ((k * 2654435761) % n for k in range(64))],
    }


def walk(root, prefix):
    files = [p for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink()]
    for p in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        yield p, f"{prefix}/{p.relative_to(root).as_posix()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pydicom-data", required=True)
    ap.add_argument("--test-files", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, _timeout)
    entries = [*walk(args.pydicom_data, "pydicom-data"), *walk(args.test_files, "pydicom")]
    with open(args.out, "w", encoding="utf-8", newline="\n") as out:
        for path, name in entries:
            signal.alarm(PER_FILE_TIMEOUT_S)
            try:
                rec = {"file": name, "ok": True, **describe(path)}
            except Exception as e:  # one bad file must not stop the walk
                rec = {"file": name, "ok": False, "error": f"{type(e).__name__}: {str(e)[:120]}"}
            finally:
                signal.alarm(0)
            out.write(json.dumps(rec) + "\n")
            print(name, "ok" if rec["ok"] else rec["error"], flush=True)


if __name__ == "__main__":
    main()
