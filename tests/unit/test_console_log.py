"""Long commands: the libraries' output (Python, log records, child processes) goes to a log file, and the
terminal gets one line per stage."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from orthoseg.console import log_file_path, output_to_file, stage_line


def test_output_of_this_process_and_its_children_goes_to_the_file(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = log_file_path(str(tmp_path / "work"), "demo")
    with output_to_file(log) as console:
        print("a line printed by python")
        logging.getLogger("orthoseg.test").warning("a log record")
        subprocess.run(
            [sys.executable, "-c", "import sys; print('child out'); print('child err', file=sys.stderr)"]
        )
        with stage_line(console, "[1/1] A stage"):
            print("inside the stage")
    captured = capfd.readouterr()
    text = log.read_text()
    for line in (
        "a line printed by python",
        "child out",
        "child err",
        "inside the stage",
        "===== [1/1] A stage",
    ):
        assert line in text
    assert log.parent == tmp_path / "work" / "logs" and log.name.startswith("demo-")
    # The terminal (stderr) shows the stage's line and nothing of the rest; stdout nothing at all.
    assert "✓ [1/1] A stage" in captured.err and "child" not in captured.err + captured.out
    assert "a line printed by python" not in captured.out
    # After the block the descriptors are back.
    print("after")
    assert "after" in capfd.readouterr().out


def test_the_descriptors_come_back_when_the_work_fails(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "logs" / "x.log"
    with pytest.raises(RuntimeError), output_to_file(log):
        print("before the failure")
        raise RuntimeError("boom")
    print("still printing")
    assert "still printing" in capfd.readouterr().out
    assert "before the failure" in log.read_text()
