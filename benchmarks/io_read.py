"""Reading speed of medseg.io vs SimpleITK on the real DICOM series and a NIfTI file.

Usage: python benchmarks/io_read.py [--data ../shared/data] [--repeats 3]
Prints best-of-N wall times and the medseg / SimpleITK ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import SimpleITK as sitk

from medseg.io import read_volume
from medseg.io.dicom_series import scan_folder


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = args.data.resolve()
    print(f"{'input':42} {'medseg s':>9} {'sitk s':>8} {'ratio':>6}  notes")
    for rel in ("vs_seg_dicom", "totalseg/example_ct_dicom"):
        folder = data / rel
        n = len(list(folder.iterdir()))
        ours = best_of(lambda f=folder: read_volume(f), args.repeats)
        theirs = best_of(lambda f=folder: sitk_series(f), args.repeats)
        scan = best_of(lambda f=folder: scan_folder(f), args.repeats)
        print(
            f"{rel + f' ({n} files)':42} {ours:9.3f} {theirs:8.3f} {ours / theirs:6.2f}  header scan {scan:.3f} s"
        )
    nii = data / "brats2015" / "pat0001" / "t1c.nii.gz"
    ours = best_of(lambda: read_volume(nii), args.repeats)
    theirs = best_of(lambda: sitk.GetArrayFromImage(sitk.ReadImage(str(nii))), args.repeats)
    print(f"{'brats2015/pat0001/t1c.nii.gz':42} {ours:9.3f} {theirs:8.3f} {ours / theirs:6.2f}")


if __name__ == "__main__":
    main()
