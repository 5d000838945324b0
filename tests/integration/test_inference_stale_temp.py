"""A resumed inference run removes the temporary files a killed run left in its output folders."""

from __future__ import annotations

import tempfile
from pathlib import Path

from orthoseg.inference import run_inference
from orthoseg.settings import Settings
from orthoseg.storage import LocalStore
from tests.integration import test_inference as base


def test_a_resumed_run_removes_stale_temp_files(
    ray_cluster: None, settings: Settings, tmp_path: Path
) -> None:
    store = LocalStore(settings.store)
    uids = base._write_radiographs(store, count=2)
    model_dir = base._save_model(tmp_path / "model", settings)
    source = f"incoming/{base.BATCH}"
    first = run_inference(settings, source, str(model_dir), config=base.CONFIG)
    run = Path(settings.store, first.output_prefix)

    # What a SIGKILL mid-write leaves: temporary files beside the outputs, one image not marked done.
    stale = []
    for folder in ("seg", "overlays", "thumbnails", "rows", ""):
        fd, name = tempfile.mkstemp(dir=run / folder, prefix=".tmp-")
        with open(fd, "wb") as handle:
            handle.write(b"half a file")
        stale.append(Path(name))
    not_ours = run / "seg" / ".tmp-kept-by-someone-else"
    not_ours.write_bytes(b"x")
    elsewhere = Path(settings.store, "incoming", base.BATCH, ".tmp-abcd1234")
    elsewhere.write_bytes(b"x")
    next(run.glob("rows/*.json")).unlink()

    resumed = run_inference(settings, source, str(model_dir), config=base.CONFIG)

    assert resumed.run_id == first.run_id and resumed.images_inferred == 1
    assert resumed.images_skipped == len(uids)  # the other image and the broken file
    assert not any(path.exists() for path in stale)
    assert not_ours.exists() and elsewhere.exists()
    assert not list(run.rglob(".tmp-????????"))
    assert base._outputs(store, resumed.output_prefix) == base._expected_keys(uids)
