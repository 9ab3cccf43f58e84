"""Python peer of the imaging bench: a CT series folder to one HU volume with pydicom + numpy.

Usage: series.py DIR. Reads every *.dcm in DIR (pixel data included, as dcmread does), sorts the
slices by ImagePositionPatient projected on the slice normal, stacks pixel_array into one numpy
volume (int16 when the rescale is integral and shared, else float32) and applies the rescale.
Compressed syntaxes decode through pylibjpeg (pylibjpeg-libjpeg for JPEG-LS). Prints one line:
RESULT seconds=... peak_kib=... bytes=... threads=1 checksum=... (the sum of the rounded HU).
"""

import os
import resource
import sys
import time

import numpy as np
import pydicom


def load_volume(folder):
    paths = [os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".dcm")]
    datasets = [pydicom.dcmread(path) for path in paths]
    orientation = [float(v) for v in datasets[0].ImageOrientationPatient]
    normal = np.cross(orientation[:3], orientation[3:])
    datasets.sort(key=lambda ds: float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)))

    rescales = {(float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))) for ds in datasets}
    integral = len(rescales) == 1 and all(v.is_integer() for v in next(iter(rescales)))
    volume = np.empty((len(datasets), datasets[0].Rows, datasets[0].Columns), np.int16 if integral else np.float32)
    for k, ds in enumerate(datasets):
        datasets[k] = None  # drop each encoded slice once it is in the volume
        slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        if integral:
            volume[k] = ds.pixel_array.astype(np.int32) * int(slope) + int(intercept)
        else:
            volume[k] = ds.pixel_array.astype(np.float32) * slope + intercept
    return volume


def main():
    start = time.perf_counter()
    volume = load_volume(sys.argv[1])
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    checksum = int(np.rint(volume).astype(np.int64).sum()) if volume.dtype.kind == "f" else int(volume.sum(dtype=np.int64))
    print(f"RESULT seconds={seconds:.6f} peak_kib={peak_kib} bytes={volume.nbytes} threads=1 checksum={checksum}")


if __name__ == "__main__":
    main()
