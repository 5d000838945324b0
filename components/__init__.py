"""Kubeflow Pipelines components: the interface of each step; the logic is one call into ``orthoseg``.

Every component runs in the project image (``Dockerfile``), which already holds orthoseg and kfp, so
nothing is pip-installed at run time. The docstrings become the descriptions in the KFP UI.
"""

from __future__ import annotations

import os

# The one image for every component and Ray worker; override when publishing elsewhere.
IMAGE = os.environ.get("ORTHOSEG_IMAGE", "ghcr.io/orthoseg/orthoseg:0.1.0")
