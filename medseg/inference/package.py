"""Model packages you can ship: ``medseg export --model DIR --format package -o model.zip``.

A package is a zip holding::

    model/                  the checkpoint (model/<name>.pt) or the model folder
                            (model/model.json + its fold checkpoints, paths as recorded)
    model_card.md           what the model is for, what it was trained on, how well it did
    metadata.json           the same, MONAI-bundle style, for other tools
    medseg_package.json     format, name, version, medseg version that wrote it and the
                            oldest one that reads it, where the model is (``model_path``)
    checksums.sha256        SHA-256 of every other file (``sha256sum -c`` reads it)

:mod:`medseg.inference.store` verifies and installs it; ``--model NAME`` then finds it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

from medseg import RESEARCH_USE_NOTICE, __version__
from medseg.checkpoint import ModelRecord, file_sha256, load_checkpoint, load_record
from medseg.inference.store import CHECKSUMS, FORMAT, MANIFEST, check_name, resolve_model
from medseg.io.atomic import atomic_path, check_output

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_DIR = "model"
INTENDED_USE = (
    "Research: segmenting the classes listed in this card in scans like the training data (same "
    "modality, channels and acquisition). Check it on your own data before relying on its "
    "figures. Not a medical device."
)


def _model_contents(
    model: Path,
) -> tuple[ModelRecord, dict[str, Any], list[tuple[Path, str]], dict]:
    """(record, first checkpoint's payload, [(file, name in the zip)], model.json or {})."""
    from medseg.inference.model_folder import MODEL_FILE, is_model_folder, read_model_folder

    if model.is_dir() and is_model_folder(model):
        record, checkpoints, data = read_model_folder(model)
        files = [(model / MODEL_FILE, f"{MODEL_DIR}/{MODEL_FILE}")]
        files += [
            (c, f"{MODEL_DIR}/{fold['checkpoint']}")
            for c, fold in zip(checkpoints, data["folds"], strict=True)
        ]
        return record, load_checkpoint(checkpoints[0]), files, data
    record, payload = load_record(model)
    return record, payload, [(model, f"{MODEL_DIR}/{model.name}")], {}


def training_data(payload: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint says about its training data, completed from the dataset's
    ``dataset.json`` when that is still where training read it (name, licence, reference).
    Only the dataset's name is kept, not its path on the training machine."""
    from medseg.io.cases import read_dataset_json

    dataset = ((payload.get("config") or {}).get("data") or {}).get("dataset")
    split = payload.get("data_split") or {}
    info: dict[str, Any] = {
        "name": Path(str(dataset)).name if dataset else None,
        "training_cases": len(split.get("train") or []) or None,
        "validation_cases": len(split.get("val") or []) or None,
    }
    metrics = payload.get("metrics") if isinstance(payload.get("metrics"), dict) else {}
    info["validation"] = {
        k: float(v)
        for k, v in metrics.items()
        if k.startswith(("val_dice", "val_mean_dice")) and isinstance(v, float)
    }
    meta_path = Path(str(dataset)) / "dataset.json" if dataset else None
    if meta_path is not None and meta_path.is_file():
        try:
            meta = read_dataset_json(meta_path)
        except Exception as err:  # the card is still useful without it
            logger.warning("%s: not read for the model card: %s", meta_path, err)
            meta = {}
        info["name"] = meta.get("name") or info["name"]
        info["description"] = meta.get("description")
        info["reference"] = meta.get("reference")
        info["licence"] = meta.get("licence") or meta.get("license")
        info["cases_in_dataset"] = meta.get("numTraining")
    return info


def _cv_figures(folder_data: dict[str, Any]) -> dict[str, Any]:
    return (folder_data.get("cross_validation") or {}).get("summary") or {}


def _task(record: ModelRecord) -> str:
    targets = ", ".join(record.regions or record.class_names[1:])
    modality = {"ct": "CT", "mr": "MR"}.get(record.preprocessing.modality, "")
    return f"segmentation of {targets} in {modality + ' ' if modality else ''}scans".strip()


@dataclasses.dataclass(frozen=True)
class PackageInfo:
    """What the card and the metadata describe: the package's ``name`` and ``version``, the
    model's record and SHA-256, its training data (:func:`training_data`), the out-of-fold
    summary of a model folder (``{}`` for a checkpoint) and the checkpoint's description."""

    name: str
    version: str
    record: ModelRecord
    data: dict[str, Any]
    cv: dict[str, Any]
    description: str | None
    sha256: str


def _figure_lines(cv: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """The card's figures: out-of-fold with intervals, or one split's validation Dice."""
    lines: list[str] = []
    structures = cv.get("structures") or {}
    if not structures:
        lines += [
            "None: a single checkpoint, not a cross-validation model folder; its "
            "validation figures come from one split and say little about new data."
        ]
        lines += [
            f"- {k} (one split, no interval): {v:.3f}"
            for k, v in data.get("validation", {}).items()
        ]
    else:
        lines += [f"Over {cv.get('cases', '?')} out-of-fold cases (95% bootstrap intervals)."]
        if cv.get("warning"):
            lines += ["", f"Warning: {cv['warning']}"]
        for structure, figures in structures.items():
            lines += ["", f"### {structure}", ""]
            lines += [
                f"- {k}: {v['text']}"
                for k, v in figures.items()
                if isinstance(v, dict) and "text" in v and not k.endswith("_raw")
            ]
    return lines


def model_card(info: PackageInfo) -> str:
    """``model_card.md``: task, classes, channels, training data and its licence,
    out-of-fold figures with their intervals, intended use, the research-only notice."""
    record, data = info.record, info.data
    unknown = "not recorded"
    lines = [
        f"# {info.name} {info.version}",
        "",
        f"**{RESEARCH_USE_NOTICE}**",
        "",
        f"Task: {_task(record)}.",
        "",
    ]
    if info.description:
        lines += [info.description, ""]
    lines += ["## Model", "", f"- network: `{record.name}` {json.dumps(record.options)}"]
    lines += [f"- input channels, in order: {', '.join(record.channel_names)}"]
    lines += [
        f"- classes (label value: name): {', '.join(f'{i}: {c}' for i, c in enumerate(record.class_names))}"
    ]
    if record.regions:
        lines += [f"- regions (sigmoid outputs): {json.dumps(record.regions)}"]
    lines += [
        f"- modality: {record.preprocessing.modality}; slice axes {list(record.axes)}, "
        f"2.5D context {record.context}",
        f"- model SHA-256: `{info.sha256}`; written by medseg {__version__}",
        "",
        "## Training data",
        "",
        f"- dataset: {data.get('name') or unknown}",
        f"- licence: {data.get('licence') or unknown + ' (check the dataset terms before sharing)'}",
        f"- reference: {data.get('reference') or unknown}",
    ]
    if data.get("training_cases"):
        lines += [
            f"- cases: {data['training_cases']} training, {data['validation_cases']} validation"
        ]
    if data.get("description"):
        lines += [f"- description: {data['description']}"]
    lines += ["", "## Out-of-fold figures", "", *_figure_lines(info.cv, data)]
    lines += ["", "## Intended use", "", INTENDED_USE, "", RESEARCH_USE_NOTICE, ""]
    return "\n".join(lines)


def _network_data_format(record: ModelRecord, outputs: list[str]) -> dict[str, Any]:
    """The network's tensors as MONAI's ``network_data_format``: 2D slices of any size
    (a multiple of the network's divisor), ``channels x (2k+1)`` neighbouring planes in."""
    from medseg.models import model_info

    divisor = model_info(record.name).get("divisor") or 1
    spatial = [f"{divisor}*n", f"{divisor}*n"] if divisor > 1 else ["*", "*"]
    planes = [
        f"{ch} slice {d:+d}"
        for ch in record.channel_names
        for d in range(-record.context, record.context + 1)
    ]
    common = {"spatial_shape": spatial, "dtype": "float32", "value_range": [],
              "is_patch_data": False, "type": "image"}  # fmt: skip
    return {
        "inputs": {"image": {
            "format": "magnitude", "modality": record.preprocessing.modality,
            "num_channels": record.in_channels, **common,
            "channel_def": {str(i): p for i, p in enumerate(planes)},
        }},
        "outputs": {"pred": {
            "format": "sigmoid" if record.regions else "segmentation",
            "num_channels": record.num_outputs, **common,
            "channel_def": {str(i): c for i, c in enumerate(outputs)},
        }},
    }  # fmt: skip


def bundle_metadata(info: PackageInfo) -> dict[str, Any]:
    """medseg's record as a MONAI-bundle-style ``metadata.json`` (the fields other tools
    read: version and changelog, package versions, task, data source, class definitions,
    evaluation figures, intended use, and the network's input and output tensors)."""
    import numpy
    import torch

    record, data, version = info.record, info.data, info.version
    outputs = list(record.regions) if record.regions else list(record.class_names)
    structures = info.cv.get("structures") or {}
    return {
        "version": version,
        "changelog": {version: f"packaged with medseg {__version__}"},
        "medseg_version": __version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"medseg": f">={__version__}"},
        "name": info.name,
        "task": _task(record),
        "description": info.description or _task(record),
        "data_source": data.get("name"),
        "data_licence": data.get("licence"),
        "data_type": "nifti, nrrd, mha or dicom (read by medseg)",
        "image_classes": f"{len(record.channel_names)} channel(s): "
        f"{', '.join(record.channel_names)}; {2 * record.context + 1} neighbouring slice(s) "
        f"each, normalised for {record.preprocessing.modality}",
        "label_classes": ", ".join(f"{i} is {c}" for i, c in enumerate(record.class_names)),
        "pred_classes": f"{len(outputs)} channel logits: {', '.join(outputs)}",
        "eval_metrics": {
            s: figs["dice"]["value"] for s, figs in structures.items() if "dice" in figs
        },
        "intended_use": f"{INTENDED_USE} {RESEARCH_USE_NOTICE}",
        "references": [r for r in (data.get("reference"),) if r],
        "network_data_format": _network_data_format(record, outputs),
        "medseg_record": record.model_dump(mode="json"),
    }


def export_package(
    model: str | Path,
    output: str | Path,
    *,
    name: str | None = None,
    version: str = "1.0.0",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the package zip of ``model`` (a checkpoint ``.pt`` or a model folder) to
    ``output`` atomically; ``name`` defaults to the zip's stem. Returns its manifest."""
    model, output = resolve_model(model), Path(output)
    name = check_name(name or output.stem.removesuffix(".zip"))
    record, payload, files, folder_data = _model_contents(model)
    check_output(output, overwrite=overwrite, inputs=[model, *(f for f, _ in files)])
    model_path = f"{MODEL_DIR}/{model.name}" if not folder_data else MODEL_DIR
    sha256 = file_sha256(files[0][0])
    description = payload.get("description")
    info = PackageInfo(
        name, version, record, training_data(payload), _cv_figures(folder_data),
        description if isinstance(description, str) else None, sha256,
    )  # fmt: skip
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "medseg_version": __version__,
        "requires_medseg": __version__,
        "model_path": model_path,
        "model_kind": "model_folder" if folder_data else "checkpoint",
        "model_sha256": sha256,
        "class_names": list(record.class_names),
        "channel_names": list(record.channel_names),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "notice": RESEARCH_USE_NOTICE,
    }
    texts = {
        MANIFEST: json.dumps(manifest, indent=2) + "\n",
        "model_card.md": model_card(info),
        "metadata.json": json.dumps(bundle_metadata(info), indent=2) + "\n",
    }
    sums = {arc: file_sha256(src) for src, arc in files}
    sums |= {arc: hashlib.sha256(text.encode()).hexdigest() for arc, text in texts.items()}
    checksums = "".join(f"{digest}  {arc}\n" for arc, digest in sorted(sums.items()))
    with atomic_path(output) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for arc, text in texts.items():
            zf.writestr(arc, text, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(CHECKSUMS, checksums, compress_type=zipfile.ZIP_DEFLATED)
        for src, arc in files:  # torch files are zips already: stored, not compressed again
            zf.write(src, arc, compress_type=zipfile.ZIP_STORED)
    logger.info("packaged %s -> %s (%d files)", model, output, len(sums) + 1)
    return manifest
