"""Build a small labelled dataset version in a store, as validation would write it (for training tests).

Radiographs are DICOM DX with ellipse "bones" and bright rectangular "metal"; labels are DICOM SEG. The
manifest has the contract columns (docs/contracts.md) and a split taken from a hash of the pseudonym.
This keeps the training, evaluation and registry tests independent of ``orthoseg.validation`` and of
the simulator.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd

from orthoseg.labels import NUM_STRUCTURES, STRUCTURE_NAMES
from orthoseg.seg_io import build_seg, seg_to_bytes
from orthoseg.storage import ObjectStore, join_key
from tests.dicom_factory import make_dx, to_bytes

CH = {name: index for index, name in enumerate(STRUCTURE_NAMES)}


def _ellipse(rows: np.ndarray, cols: np.ndarray, center: tuple[float, float], radii: tuple[float, float]):
    return ((rows - center[0]) / radii[0]) ** 2 + ((cols - center[1]) / radii[1]) ** 2 <= 1.0


def _box(rows: np.ndarray, cols: np.ndarray, r0: float, r1: float, c0: float, c1: float) -> np.ndarray:
    return (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)


def make_knee(rng: np.random.Generator, image_px: int, cemented: bool) -> tuple[np.ndarray, np.ndarray]:
    """A cartoon post-operative AP knee: (H, W) uint16 pixels and (7, H, W) bool masks (overlapping)."""
    s = image_px / 256.0
    rows, cols = np.mgrid[0:image_px, 0:image_px].astype(np.float32)
    dr, dc = rng.uniform(-8, 8, size=2) * s
    rows, cols = rows - dr, cols - dc
    masks = np.zeros((NUM_STRUCTURES, image_px, image_px), dtype=bool)
    masks[CH["femur"]] = _ellipse(rows, cols, (60 * s, 128 * s), (80 * s, 40 * s)) & (rows < 138 * s)
    masks[CH["tibia"]] = _ellipse(rows, cols, (205 * s, 128 * s), (62 * s, 38 * s)) & (rows > 145 * s)
    masks[CH["fibula"]] = _ellipse(rows, cols, (215 * s, 178 * s), (45 * s, 9 * s))
    masks[CH["patella"]] = _ellipse(rows, cols, (108 * s, 128 * s), (18 * s, 22 * s))
    masks[CH["femoral_component"]] = _box(rows, cols, 118 * s, 138 * s, 92 * s, 164 * s) & ~_ellipse(
        rows, cols, (118 * s, 128 * s), (12 * s, 14 * s)
    )
    masks[CH["tibial_component"]] = _box(rows, cols, 146 * s, 156 * s, 92 * s, 164 * s) | _box(
        rows, cols, 156 * s, 188 * s, 120 * s, 136 * s
    )
    if cemented:
        masks[CH["cement"]] = (
            _box(rows, cols, 156 * s, 161 * s, 92 * s, 164 * s) & ~masks[CH["tibial_component"]]
        )
    bone = masks[[CH["femur"], CH["tibia"], CH["fibula"], CH["patella"]]].sum(axis=0)
    pixels = 300.0 + 650.0 * bone + 1200.0 * masks[CH["cement"]]
    metal = masks[CH["femoral_component"]] | masks[CH["tibial_component"]]
    pixels[metal] = 3900.0
    pixels += rng.normal(0.0, 40.0, size=pixels.shape)
    return np.clip(pixels, 0, 4095).astype(np.uint16), masks


def write_dataset_version(
    store: ObjectStore,
    version: str = "v-test",
    count: int = 12,
    seed: int = 0,
    image_px: int = 256,
    spacing_mm: float = 0.8,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
) -> str:
    """Write ``datasets/<version>/{images,labels}/`` + ``manifest.parquet`` + ``datasets/LATEST``.

    Splits: patients are ordered by the hash of their pseudonym, the first ``test_fraction`` go to test,
    the next ``val_fraction`` to val (at least one each), the rest to train.
    """
    rng = np.random.default_rng(seed)
    records = []
    for index in range(count):
        pixels, masks = make_knee(rng, image_px, cemented=index % 2 == 0)
        ds = make_dx(pixels, spacing_mm=spacing_mm)
        ds.PatientID = f"PAT-{seed}-{index}"
        ds.PatientName = f"Test^Patient{index}"
        data = to_bytes(ds)
        uid = str(ds.SOPInstanceUID)
        image_key = join_key("datasets", version, "images", f"{uid}.dcm")
        label_key = join_key("datasets", version, "labels", f"{uid}.dcm")
        store.put_bytes(image_key, data)
        store.put_bytes(label_key, seg_to_bytes(build_seg(ds, masks, automatic=False)))
        records.append(
            {
                "sop_instance_uid": uid,
                "image_key": image_key,
                "label_key": label_key,
                "truth_key": None,
                "sha256": hashlib.sha256(data).hexdigest(),
                "patient_pseudonym": hashlib.sha256(f"salt:{ds.PatientID}".encode()).hexdigest()[:16],
                "split": "",
                "batch": "test-batch",
                "rows": image_px,
                "columns": image_px,
                "pixel_spacing_row_mm": spacing_mm,
                "pixel_spacing_col_mm": spacing_mm,
                "photometric_interpretation": "MONOCHROME2",
                "view_position": "AP",
                "laterality": "R",
                "modality": "DX",
                "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
            }
        )
    manifest = pd.DataFrame.from_records(records)
    order = manifest["patient_pseudonym"].map(lambda p: hashlib.sha256(p.encode()).hexdigest()).argsort()
    n_test = max(1, round(count * test_fraction))
    n_val = max(1, round(count * val_fraction))
    splits = np.array(["train"] * count, dtype=object)
    splits[order.to_numpy()[:n_test]] = "test"
    splits[order.to_numpy()[n_test : n_test + n_val]] = "val"
    manifest["split"] = splits
    buffer = io.BytesIO()
    manifest.to_parquet(buffer, index=False)
    store.put_bytes(join_key("datasets", version, "manifest.parquet"), buffer.getvalue())
    store.put_bytes("datasets/LATEST", version.encode())
    return version
