"""What one inference run writes per image: DICOM SEG, overlay and thumbnail, then the image's row as its
completion marker (written last); and the clean-up of temporary files a killed run left behind.

Every file goes through ``ObjectStore.put_bytes``: on a local store a temporary file renamed into place
(never a half file under the final name), on S3 a single PUT.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orthoseg.inference_source import key_digest
from orthoseg.storage import LocalStore, ObjectStore, join_key

if TYPE_CHECKING:
    from orthoseg.inference_analysis import ImageAnalysis

logger = logging.getLogger(__name__)

# Folders of a run that the workers write into (the driver writes the run's root files).
OUTPUT_FOLDERS = ("seg", "overlays", "thumbnails", "rows")
# LocalStore.put_bytes's temporary files: tempfile.mkstemp(prefix=".tmp-") beside the final file.
_TEMP_NAME = re.compile(r"\.tmp-[a-z0-9_]{8}")


def row_key(output_prefix: str, image_key: str) -> str:
    """Key of the row file of one input (a digest of its key: file names may carry anything)."""
    return join_key(output_prefix, "rows", hashlib.sha256(image_key.encode()).hexdigest()[:24] + ".json")


def deterministic_uid(*parts: str) -> str:
    """A DICOM UID (2.25 form) derived from ``parts``: a re-run writes the same SEG UIDs."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '|'.join(parts)).int}"


@dataclass(frozen=True)
class WrittenImage:
    """Store keys of one image's files."""

    seg_key: str
    overlay_key: str
    thumbnail_key: str


class ResultWriter:
    """Writes the files of one run's images under ``output_prefix`` in ``store``.

    Args:
        store: the output store.
        output_prefix: ``predictions/<model-version>/<run-id>``.
        model_name, model_version: the SEG's algorithm name, and part of its deterministic UIDs.
        run_id: part of the SEG's deterministic UIDs.
        overlay_max_side_px: longest side of the overlay PNG.
    """

    def __init__(
        self,
        store: ObjectStore,
        output_prefix: str,
        model_name: str,
        model_version: str,
        run_id: str,
        overlay_max_side_px: int,
    ) -> None:
        self.store = store
        self.output_prefix = output_prefix
        self.model_name = model_name
        self.model_version = model_version
        self.run_id = run_id
        self.overlay_max_side_px = overlay_max_side_px

    def write_image(self, analysis: ImageAnalysis) -> WrittenImage:
        """The SEG (one BINARY segment per structure, referencing the film), the overlay PNG and its
        thumbnail JPEG, keyed by the film's SOPInstanceUID.

        Raises:
            ValueError: when the analysis failed (nothing to write).
            StoreError: when a file cannot be written.
        """
        from orthoseg.overlay import overlay_png_bytes, thumbnail_jpeg
        from orthoseg.seg_io import build_seg, seg_to_bytes

        if analysis.error is not None or analysis.masks is None:
            raise ValueError(f"nothing to write for a failed analysis ({analysis.error})")
        radiograph, masks = analysis.radiograph, analysis.masks
        uid = radiograph.sop_instance_uid
        seg = build_seg(
            analysis.header,
            masks,
            automatic=True,
            algorithm=f"{self.model_name} v{self.model_version}",
            series_instance_uid=deterministic_uid(uid, self.model_version, self.run_id, "series"),
            sop_instance_uid=deterministic_uid(uid, self.model_version, self.run_id, "seg"),
        )
        written = WrittenImage(
            seg_key=join_key(self.output_prefix, "seg", f"{uid}.dcm"),
            overlay_key=join_key(self.output_prefix, "overlays", f"{uid}.png"),
            thumbnail_key=join_key(self.output_prefix, "thumbnails", f"{uid}.jpg"),
        )
        self.store.put_bytes(written.seg_key, seg_to_bytes(seg))
        overlay = overlay_png_bytes(
            radiograph.pixels, masks, self.overlay_max_side_px, drawing=analysis.drawing
        )
        self.store.put_bytes(written.overlay_key, overlay)
        self.store.put_bytes(written.thumbnail_key, thumbnail_jpeg(overlay))
        return written

    def write_marker(self, image_key: str, row_json: str) -> str | None:
        """Write the image's row, its completion marker (last, after its files).

        Returns:
            None, or why the marker could not be written (logged; the image is done again next run).
        """
        try:
            self.store.put_bytes(row_key(self.output_prefix, image_key), row_json.encode())
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            logger.error("completion marker of image %s not written: %s", key_digest(image_key), reason)
            return reason
        return None


def remove_stale_temp_files(store: ObjectStore, output_prefix: str) -> int:
    """Delete the temporary files a killed run left in the run's folders (the run's root and
    ``OUTPUT_FOLDERS``), before a resumed run writes there.

    Only names ``LocalStore.put_bytes`` gives its temporary files (``.tmp-`` and 8 random characters)
    are removed, only directly in those folders. A store other than a local folder writes without
    temporary files: nothing to do there. Call it while no other process writes the same run.

    Returns:
        How many files were removed.
    """
    if not isinstance(store, LocalStore):
        return 0
    removed = 0
    for folder in ("", *OUTPUT_FOLDERS):
        directory = store.local_path(join_key(output_prefix, folder) if folder else output_prefix)
        if directory.is_symlink() or not directory.is_dir():
            continue
        for path in directory.iterdir():
            if _TEMP_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed += 1
    if removed:
        logger.info("removed %d temporary file(s) an interrupted run left under %s", removed, output_prefix)
    return removed
