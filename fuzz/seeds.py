#!/usr/bin/env python3
"""Builds the seed corpora of the Lucent fuzz targets from the provisioned test data.

Usage: seeds.py DATA_DIR MODELS_DIR OUT_DIR [MAX_BYTES]

DATA_DIR is target/lucent-data (pydicom-data and pydicom-test-files, from `cargo xtask setup`),
MODELS_DIR the repository's models/ (its *.toml manifests). Writes OUT_DIR/<target>/ for every
target. Needs pydicom (target/lucent-data/venv-pydicom) for the JPEG and RLE frames; without it
those two targets get only the committed seeds in fuzz/regressions/. Seeds over MAX_BYTES
(default 256 KiB) are left out: they slow every execution and add little coverage.
"""
import hashlib
import io
import pathlib
import struct
import sys
import zipfile

data_dir, models_dir, out_dir = (pathlib.Path(a) for a in sys.argv[1:4])
max_bytes = int(sys.argv[4]) if len(sys.argv) > 4 else 256 * 1024

try:
    import pydicom
    from pydicom.encaps import generate_frames
except ImportError:  # pragma: no cover
    pydicom = None


# Inputs of open findings (fuzz/regressions-open/<target>/<kind>-<sha1>) are not seeded: each
# stops a run at once (pydicom's UN_sequence.dcm is one of them).
open_findings = {
    p.name.split("-", 1)[-1] for p in (pathlib.Path(__file__).parent / "regressions-open").rglob("*") if p.is_file()
}


def put(target, data):
    if len(data) > max_bytes or not data or hashlib.sha1(data).hexdigest() in open_findings:
        return
    d = out_dir / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


dicoms = sorted(
    p for folder in ("pydicom-data", "pydicom-test-files") for p in (data_dir / folder).rglob("*") if p.is_file()
)
JPEG = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"}
JLS_J2K = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}
RLE = "1.2.840.10008.1.2.5"

for path in dicoms:
    raw = path.read_bytes()
    if path.suffix in (".dcm", "") or path.name.startswith("DICOMDIR"):
        put("dicom_parse", raw)
    if path.name.startswith("DICOMDIR"):
        put("zip_dicomdir_import", raw)
    if pydicom is None or path.suffix != ".dcm":
        continue
    try:
        ds = pydicom.dcmread(io.BytesIO(raw), force=True)
        ts = str(ds.file_meta.TransferSyntaxUID)
        if ts in JLS_J2K:
            put("decode_jpegls_j2k", raw)
        if ts not in JPEG and ts != RLE:
            continue
        frames = list(generate_frames(ds.PixelData, number_of_frames=int(getattr(ds, "NumberOfFrames", 1) or 1)))
        frame = frames[0]
        if ts in JPEG:
            put("decode_jpeg", bytes([1 if ds.PhotometricInterpretation == "RGB" else 0]) + frame)
        else:
            cols, rows = int(ds.Columns), int(ds.Rows)
            if cols <= 256 and rows <= 256:
                params = bytes([cols - 1, rows - 1, 1 if int(ds.SamplesPerPixel) == 3 else 0,
                                {8: 0, 16: 1, 32: 2}[int(ds.BitsAllocated)]])
                put("decode_rle", params + frame)
            # A small real RLE frame behind other dimensions still reaches the segment checks.
            put("decode_rle", bytes([15, 15, 0, 0]) + frame[:4096])
    except Exception:  # noqa: BLE001 - seeds are best effort (files without meta, pixels, ...)
        pass

# ZIPs: the DICOMDIR test folder, and a few small files, archived (stored and deflated).
for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for p in sorted((data_dir / "pydicom-test-files" / "dicomdirtests").rglob("*")):
            if p.is_file() and p.stat().st_size < 64 * 1024:
                z.write(p, p.relative_to(data_dir / "pydicom-test-files"))
    put("zip_dicomdir_import", buf.getvalue())
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression) as z:
            z.write(data_dir / "pydicom-test-files" / name, name)
        put("zip_dicomdir_import", buf.getvalue())

# DICOMweb multipart: a content-type line, then bodies of small DICOM files.
for boundary in ("lucent-fuzz", "b"):
    for names in (["CT_small.dcm"], ["MR_small.dcm", "no_meta.dcm"], []):
        body = b""
        for n in names:
            body += (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode()
            body += (data_dir / "pydicom-test-files" / n).read_bytes() + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        head = f'multipart/related; type="application/dicom"; boundary={boundary}\n'.encode()
        put("dicomweb_multipart", head + body)


# PDUs: P-DATA-TF with commands (Implicit VR LE) and data sets, then A-RELEASE-RQ.
def element(group, elem, value):
    if isinstance(value, int):
        value = struct.pack("<H", value)
    elif isinstance(value, str):
        value = value.encode()
        if len(value) % 2:
            value += b"\0"
    return struct.pack("<HHI", group, elem, len(value)) + value


def command(fields):
    body = b"".join(element(0, e, v) for e, v in fields)
    return element(0, 0x0000, struct.pack("<I", len(body))) + body


def pdata(context, flags, value):
    item = struct.pack(">I", len(value) + 2) + bytes([context, flags]) + value
    return b"\x04\x00" + struct.pack(">I", len(item)) + item


RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
echo = command([(0x0002, "1.2.840.10008.1.1"), (0x0100, 0x0030), (0x0110, 1), (0x0800, 0x0101)])
ct = (data_dir / "pydicom-test-files" / "CT_small.dcm").read_bytes()
dataset = ct[132:]
meta_len = struct.unpack("<I", dataset[8:12])[0]
dataset = dataset[12 + meta_len:]
store = command([(0x0002, "1.2.840.10008.5.1.4.1.1.2"), (0x0100, 0x0001), (0x0110, 7), (0x0700, 0),
                 (0x0800, 0x0000), (0x1000, "1.2.3.4.5.6.7")])
put("pdu_reader", pdata(3, 3, echo) + RELEASE_RQ)
put("pdu_reader", pdata(3, 1, echo[:20]) + pdata(3, 3, echo[20:]) + RELEASE_RQ)
put("pdu_reader", pdata(1, 3, store) + pdata(1, 0, dataset[:1000]) + pdata(1, 2, dataset[1000:]) + RELEASE_RQ)
put("pdu_reader", pdata(1, 3, store) + pdata(1, 2, dataset) + pdata(3, 3, echo) + RELEASE_RQ)
put("pdu_reader", b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00")

# Manifests.
for p in sorted(models_dir.rglob("*.toml")):
    put("manifest_toml", p.read_bytes())

for d in sorted(out_dir.iterdir()):
    print(f"seeds: {d.name}: {len(list(d.iterdir()))} inputs")
