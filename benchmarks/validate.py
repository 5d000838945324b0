"""Validation throughput: parallel header+pixel reading vs a plain sequential loop; header-only pre-screen.

Generates realistic 12-bit DX knee-sized films (default 1500 x 1500) in a temporary folder, a quarter each
uncompressed, RLE, JPEG-LS and JPEG 2000, then measures in one run, on the same files:

- ``sequential``: the reader (header, PHI, pixel decode and statistics) in a plain loop in this process;
- ``parallel``: the same reader in ``--workers`` processes as ``validate_batch`` runs it (with pool start);
- ``validate_batch``: the whole step (reading, Great Expectations, dataset and report writing);
- ``header_only``: ``prescreen_batch`` over ``--header-files`` files (JPEG 2000 lossy exports), and the
  header-only reader alone in ``--workers`` processes.

Sequential and parallel reading alternate for ``--rounds`` rounds; the best round of each is reported (the
machine may be shared), with the median ratio next to it.

Prints one JSON object. Usage: ``python benchmarks/validate.py [--files 48] [--header-files 2000]``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("benchmarks.validate")

DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
UID_ROOT = "1.2.826.0.1.3680043.8.498.9"
SYNTAXES = ("ExplicitVRLittleEndian", "RLELossless", "JPEGLSLossless", "JPEG2000Lossless")


def phantom(size_px: int, seed: int) -> np.ndarray:
    """A knee-like 12-bit film: soft tissue, two bones with cortex, a metal implant, quantum noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size_px, 0:size_px].astype(np.float32) / size_px
    tissue = np.exp(-(((xx - 0.5) / 0.32) ** 2))
    femur = (np.abs(xx - 0.5) < 0.12 + 0.06 * (yy > 0.35)) & (yy < 0.48)
    tibia = (np.abs(xx - 0.5) < 0.11 + 0.07 * (yy < 0.6)) & (yy > 0.52)
    cortex = np.abs(np.abs(xx - 0.5) - 0.1) < 0.015
    implant = (np.abs(xx - 0.5) < 0.15) & (np.abs(yy - 0.5) < 0.04)
    signal = 300 + 900 * tissue + 900 * (femur | tibia) + 500 * ((femur | tibia) & cortex) + 1800 * implant
    noisy = signal + rng.normal(0, 18, signal.shape) * np.sqrt(signal / 1000)
    return np.clip(noisy, 0, 4095).astype(np.uint16)


def dx_dataset(index: int, pixels: np.ndarray) -> Any:
    """A de-identified DX 'for presentation' dataset around ``pixels``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    uid = f"{UID_ROOT}.{index}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_PRESENTATION
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = DX_PRESENTATION, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{uid}.1", f"{uid}.2"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "KNEE", "AP"
    ds.ImageLaterality = "LR"[index % 2]
    ds.PatientID, ds.PatientName, ds.PatientIdentityRemoved = f"BENCH{index // 2:05d}", "BENCH^CASE", "YES"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [0.148, 0.148]
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def encoded_templates(size_px: int, per_syntax: int, syntaxes: tuple[str, ...], **encode: Any) -> list[Any]:
    """``per_syntax`` distinct images per transfer syntax, encoded once (encoding is not what is measured)."""
    import pydicom.uid

    templates = []
    for s, syntax in enumerate(syntaxes):
        for i in range(per_syntax):
            ds = dx_dataset(0, phantom(size_px, seed=s * 100 + i))
            if syntax != "ExplicitVRLittleEndian":
                ds.compress(getattr(pydicom.uid, syntax), **encode)
            templates.append(ds)
    return templates


def write_files(folder: Path, count: int, templates: list[Any]) -> Counter[str]:
    """``count`` distinct files (own UIDs and patients) cycling through the encoded templates."""
    folder.mkdir(parents=True, exist_ok=True)
    syntaxes: Counter[str] = Counter()
    for index in range(count):
        ds = copy.copy(templates[index % len(templates)])
        ds.file_meta = copy.deepcopy(ds.file_meta)
        uid = f"{UID_ROOT}.{index + 1}"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.PatientID = f"BENCH{index // 2:05d}"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        (folder / f"{index:05d}.dcm").write_bytes(buffer.getvalue())
        syntaxes[ds.file_meta.TransferSyntaxUID.name] += 1
    return syntaxes


def run(files: int, header_files: int, workers: int, size_px: int, rounds: int, work: Path) -> dict[str, Any]:
    from orthoseg.settings import Settings
    from orthoseg.storage import LocalStore
    from orthoseg.validation import ValidationConfig, prescreen_batch, validate_batch
    from orthoseg.validation.executor import read_all
    from orthoseg.validation.inventory import take_inventory
    from orthoseg.validation.reader import ReaderContext, read_image

    started = time.perf_counter()
    pixel_dir = work / "pixel" / "images"
    templates = encoded_templates(size_px, 2, SYNTAXES)
    pixel_syntaxes = write_files(pixel_dir, files, templates)
    header_templates = encoded_templates(size_px, 2, ("JPEG2000",), j2k_cr=[20])
    header_syntaxes = write_files(work / "header" / "images", header_files, header_templates)
    generation_s = time.perf_counter() - started
    sizes = [p.stat().st_size for p in pixel_dir.iterdir()]

    config = ValidationConfig(workers=workers, pseudonym_salt="benchmark-salt")
    source = LocalStore(pixel_dir.parent)
    inventory = take_inventory(source)
    context = ReaderContext(source.uri, None, False, config, "benchmark-salt")
    # Warm-up: decoder plugins imported here, the fork server started once (as in any long-lived process).
    for file in inventory.images[: len(SYNTAXES) * 2]:
        read_image(source, file, context)
    read_all(inventory.images[:2], context, workers)

    # Alternating rounds on a shared machine: the best round of each is the least disturbed one.
    load_at_start = os.getloadavg()[0]
    sequential_times, parallel_times = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        sequential_rows = [read_image(source, file, context) for file in inventory.images]
        sequential_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        parallel_rows = read_all(inventory.images, context, workers)
        parallel_times.append(time.perf_counter() - t0)
        decoded = sum(1 for row in parallel_rows if row["pixel_decoded"])
        assert decoded == len(inventory.images) == sum(1 for row in sequential_rows if row["pixel_decoded"])
    sequential_s, parallel_s = min(sequential_times), min(parallel_times)

    settings = Settings(store=str(work / "store"), work_dir=str(work / "work"))
    import great_expectations  # noqa: F401  (import cost is not validation throughput)

    t0 = time.perf_counter()
    summary = validate_batch(settings, str(pixel_dir.parent), "bench", "inference", config=config)
    validate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prescreen = prescreen_batch(settings, str(work / "header"), "bench-header", "inference", config=config)
    prescreen_s = time.perf_counter() - t0
    header_source = LocalStore(work / "header")
    header_context = ReaderContext(header_source.uri, None, True, config, "benchmark-salt")
    header_inventory = take_inventory(header_source)
    header_times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        read_all(header_inventory.images, header_context, workers, chunk_size=64)
        header_times.append(time.perf_counter() - t0)
    header_read_s = min(header_times)

    return {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1min": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
            "rounds": rounds,
        },
        "files": {
            "header_pixel_files": files,
            "size_px": [size_px, size_px],
            "bits_stored": 12,
            "transfer_syntaxes": dict(pixel_syntaxes),
            "mean_file_mb": round(float(np.mean(sizes)) / 1e6, 2),
            "header_only_files": header_files,
            "header_only_transfer_syntaxes": dict(header_syntaxes),
            "generation_s": round(generation_s, 1),
        },
        "header_pixel": {
            "workers": workers,
            "sequential_files_per_s": round(files / sequential_s, 2),
            "parallel_files_per_s": round(files / parallel_s, 2),
            "speedup": round(sequential_s / parallel_s, 2),
            "speedup_median_rounds": round(float(np.median(sequential_times) / np.median(parallel_times)), 2),
            "target_speedup": 1.7,
            "note": "best of alternating rounds; same reader, same files; parallel includes the pool start",
        },
        "validate_batch": {
            "files_per_s": round(files / validate_s, 2),
            "seconds": round(validate_s, 2),
            "phase_seconds": summary.phase_seconds,
            "accepted": summary.accepted,
        },
        "header_only": {
            "prescreen_files_per_s": round(header_files / prescreen_s, 1),
            "prescreen_seconds": round(prescreen_s, 2),
            "header_read_files_per_s": round(header_files / header_read_s, 1),
            "header_read_files_per_s_median_rounds": round(header_files / float(np.median(header_times)), 1),
            "target_files_per_s": 1000,
            "would_accept": prescreen.would_accept,
            "note": "prescreen_batch end to end (listing, reading, Great Expectations, report)",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=48, help="films for header+pixel validation")
    parser.add_argument("--header-files", type=int, default=2000, help="files for the header-only pre-screen")
    parser.add_argument("--workers", type=int, default=2, help="reader processes")
    parser.add_argument("--size", type=int, default=1500, help="film side in pixels")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (best is reported)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="orthoseg-bench-validate-") as folder:
        result = run(args.files, args.header_files, args.workers, args.size, args.rounds, Path(folder))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
