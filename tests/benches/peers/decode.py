"""Python peer of the imaging bench: decode one DICOM image with pydicom (pixel_array).

Usage: decode.py FILE. Compressed syntaxes decode through pylibjpeg (pylibjpeg-openjpeg for
JPEG 2000). Prints one line: RESULT seconds=... peak_kib=... bytes=... threads=1 checksum=...
(the sum of the stored sample values).
"""

import resource
import sys
import time

import numpy as np
import pydicom


def main():
    start = time.perf_counter()
    pixels = pydicom.dcmread(sys.argv[1]).pixel_array
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    checksum = int(pixels.sum(dtype=np.int64))
    print(f"RESULT seconds={seconds:.6f} peak_kib={peak_kib} bytes={pixels.nbytes} threads=1 checksum={checksum}")


if __name__ == "__main__":
    main()
