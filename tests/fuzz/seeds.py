"""Small valid seed files of every format the readers take, and the header fields worth
mutating in each (offsets for binary headers, key lines for text headers)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from tests.io.dicom_factory import write_slice

# NIfTI-1 header fields: (offset, struct format) - dims, datatype, bitpix, pixdim,
# vox_offset, scl_slope/inter, qform/sform codes, quaternion, srow
NIFTI_FIELDS = [
    (40, "<h"), (42, "<h"), (44, "<h"), (46, "<h"), (48, "<h"),
    (70, "<h"), (72, "<h"),
    (76, "<f"), (80, "<f"), (84, "<f"), (88, "<f"),
    (108, "<f"), (112, "<f"), (116, "<f"),
    (252, "<h"), (254, "<h"),
    (256, "<f"), (260, "<f"), (264, "<f"), (268, "<f"), (272, "<f"), (276, "<f"),
    (280, "<f"), (284, "<f"), (288, "<f"), (300, "<f"), (316, "<f"), (324, "<f"),
]  # fmt: skip

NRRD_KEYS = [b"type:", b"dimension:", b"sizes:", b"space directions:", b"encoding:",
             b"endian:", b"space origin:", b"kinds:"]  # fmt: skip
MHA_KEYS = [b"NDims", b"DimSize", b"ElementType", b"ElementSpacing", b"TransformMatrix",
            b"Offset", b"CompressedData", b"BinaryDataByteOrderMSB", b"ElementNumberOfChannels"]  # fmt: skip
DICOM_FIELDS = ["Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation",
                "SamplesPerPixel", "RescaleSlope", "RescaleIntercept", "PixelSpacing",
                "ImageOrientationPatient", "ImagePositionPatient", "NumberOfFrames",
                "PhotometricInterpretation", "TransferSyntaxUID"]  # fmt: skip


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(6, 5, 4)) * 100).astype(np.int16)


def write_seeds(folder: Path) -> dict[str, Path]:
    """One small valid file per format; returns ``{format: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = [10, -5, 3]
    seeds = {}
    for suffix in (".nii", ".nii.gz"):
        path = folder / f"seed{suffix}"
        nib.save(nib.Nifti1Image(_image(), affine), str(path))
        seeds[suffix.lstrip(".")] = path
    for suffix, compress in ((".nrrd", False), (".mha", True)):
        image = sitk.GetImageFromArray(_image())
        image.SetSpacing((0.8, 0.9, 2.5))
        path = folder / f"seed{suffix}"
        sitk.WriteImage(image, str(path), useCompression=compress)
        seeds[suffix.lstrip(".")] = path
    pixels = np.arange(6 * 5, dtype=np.uint16).reshape(6, 5) * 7
    seeds["dcm"] = write_slice(folder / "seed.dcm", pixels, (0.0, 0.0, 0.0), series_uid="1.2.3.4")
    config = folder / "seed.yaml"
    config.write_text(
        "dataset: data/brain_mr\npreprocessing:\n  modality: mr\n  slice_axis: 2\n"
        "context: 1\ncrop_size: [64, 64]\nforeground_ratio: 0.5\nval_cases: [a, b]\n"
    )
    seeds["yaml"] = config
    return seeds


#: mutated inputs tried per format in this session: {format: {"ok": n, "error": n}}
COUNTS: dict[str, dict[str, int]] = {}


def write_format_seeds(folder: Path) -> dict[str, Path]:
    """Seeds of the non-image formats: a tiny checkpoint, a zip upload of a DICOM series, a
    DICOM-SEG drawn on that series and a full training config; returns ``{format: path}``."""
    import zipfile

    import torch

    from medseg.checkpoint import save_checkpoint
    from medseg.data.preprocessing import PreprocessingParams
    from medseg.inference.dicom_seg import write_dicom_seg
    from medseg.io import Volume, read_volume
    from medseg.models import build_model
    from tests.io.dicom_factory import write_series

    folder.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, Path] = {}
    names = ["background", "lesion", "rim"]
    torch.manual_seed(0)
    model = build_model("unet", 1, 3, depth=2, base_channels=4)
    params = PreprocessingParams(modality="mr", channel_names=["MRI"], class_names=names)
    payload = {
        "model": {"name": "unet", "in_channels": 1, "num_classes": 3,
                  "options": {"depth": 2, "base_channels": 4}},
        "state_dict": model.state_dict(),
        "preprocessing": params.model_dump(mode="json"),
        "sampling": {"axis": 2, "axes": [2], "context": 0},
        "class_names": names,
        "channel_names": ["MRI"],
    }  # fmt: skip
    seeds["checkpoint"] = save_checkpoint(payload, folder / "seed.pt")

    series, _ = write_series(folder / "series", n=3, shape=(6, 4))
    seeds["zip"] = folder / "seed.zip"
    with zipfile.ZipFile(seeds["zip"], "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(series.iterdir()):
            archive.write(path, f"series/{path.name}")

    image = read_volume(series)
    label = np.zeros(image.shape, np.uint8)
    label[1:4, 1:3, :] = 1
    label[2, 2, 1:] = 2
    seeds["dicom-seg"] = write_dicom_seg(
        Volume(label, image.affine), image.metadata["dicom_files"], names, folder / "seed_seg.dcm"
    )

    repo = Path(__file__).resolve().parents[2]
    config = folder / "train.yaml"
    config.write_text((repo / "configs" / "sample.yaml").read_text(encoding="utf-8"))
    seeds["train-config"] = config
    return seeds
