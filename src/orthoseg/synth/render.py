"""Projecting knee scenes onto the detector grid: line integrals of attenuation and the label masks.

Smooth things are traced on coarser grids and upsampled (soft tissue at 1/4, bone at 1/2 of the
pixel pitch by default); metal, cement and radiolucent lines at full resolution so their edges stay
razor sharp. The trabecular texture is applied at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from orthoseg.labels import BY_NAME, NUM_STRUCTURES
from orthoseg.synth.anatomy import Bone, smooth
from orthoseg.synth.geometry import Camera, Field, intersect, subtract, trace, union_length
from orthoseg.synth.knee import KneeScene
from orthoseg.synth.physics import MU_PER_MM
from orthoseg.synth.solids import Solid, solid_length
from orthoseg.synth.span_cache import SpanCache


@dataclass
class Projection:
    """What the detector sees before exposure and noise.

    Attributes:
        line_integral: sum of mu * path length per pixel (dimensionless), float32.
        masks: (7, H, W) label masks.
        body: True where a ray crosses the patient (skin envelope).
    """

    line_integral: np.ndarray
    masks: np.ndarray
    body: np.ndarray


def coarse_camera(camera: Camera, factor: int) -> Camera:
    """The same view on a grid ``factor`` times coarser (pixel centres stay consistent)."""
    if factor == 1:
        return camera
    shape = (-(-camera.shape[0] // factor), -(-camera.shape[1] // factor))
    return replace(
        camera,
        spacing_mm=camera.spacing_mm * factor,
        shape=shape,
        i0=(camera.i0 + 0.5) / factor - 0.5,
        j0=(camera.j0 + 0.5) / factor - 0.5,
    )


def upsample(image: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling by an integer factor (pixel centres aligned, edges clamped), cropped to ``shape``.

    Works on (h, w) or (c, h, w) arrays; the coarse grid is ``ceil(shape / factor)``. torch's kernel is
    ~10x faster than the equivalent numpy and the result is the same.
    """
    if factor == 1:
        return image[..., : shape[0], : shape[1]]
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    batched = tensor[None, None] if tensor.ndim == 2 else tensor[None]
    out = F.interpolate(batched, scale_factor=float(factor), mode="bilinear", align_corners=False)
    out = out[0, 0] if tensor.ndim == 2 else out[0]
    return out[..., : shape[0], : shape[1]].numpy()


def _mu(material: str | float) -> float:
    return float(material) if not isinstance(material, str) else MU_PER_MM[material]


def bone_lengths(bone: Bone, camera: Camera) -> tuple[Field | None, Field | None]:
    """Path lengths through the whole bone and through its inside (cancellous bone or marrow)."""

    trace = SpanCache(camera).trace  # the cut regions serve the outer and the inner bone

    def trimmed(lobes: list) -> Field | None:
        spans = [trace(lobe) for lobe in lobes]
        for cut in bone.keep:
            if cut.mode != "keep":
                continue
            region = trace(cut.region)
            for i, span in enumerate(spans):
                if span is not None and (cut.lobes is None or i in cut.lobes):
                    spans[i] = intersect(span, region) if region is not None else None
        total = union_length([s for s in spans if s is not None])
        for cut in bone.keep:
            if cut.mode != "remove" or total is None:
                continue
            region = trace(cut.region)
            if region is None:
                continue
            chosen = [
                s for i, s in enumerate(spans) if s is not None and (cut.lobes is None or i in cut.lobes)
            ]
            inside = union_length([x for x in (intersect(s, region) for s in chosen) if x is not None])
            if cut.spare is not None and inside is not None:
                spare = trace(cut.spare)
                if spare is not None:
                    both = [x for x in (intersect(s, region) for s in chosen) if x is not None]
                    kept = union_length([x for x in (intersect(s, spare) for s in both) if x is not None])
                    inside = subtract(inside, kept)
            total = subtract(total, inside)
        return total

    return trimmed(bone.outer), trimmed(bone.inner)


def _axis_t(bone: Bone, camera: Camera, f: Field) -> np.ndarray:
    """Coordinate along the bone's axis (mm) of each pixel of ``f``'s box (in the image plane)."""
    axis = bone.frame.axes[:, 2]
    base = (
        camera.center
        - bone.frame.origin
        - camera.i0 * camera.spacing_mm * camera.e_v
        - camera.j0 * camera.spacing_mm * camera.e_u
    )
    rows = np.arange(f.r0, f.r1, dtype=np.float32) * np.float32(camera.spacing_mm * (camera.e_v @ axis))
    cols = np.arange(f.c0, f.c1, dtype=np.float32) * np.float32(camera.spacing_mm * (camera.e_u @ axis))
    return np.float32(base @ axis) + rows[:, None] + cols[None, :]


def _mask_from_coarse(mask: np.ndarray, lengths: Field, factor: int) -> None:
    """OR into the full-resolution ``mask`` the region where the upsampled coarse bone covers a pixel."""
    margin = 1
    r0, r1 = max(lengths.r0 - margin, 0), lengths.r1 + margin
    c0, c1 = max(lengths.c0 - margin, 0), lengths.c1 + margin
    coarse = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
    coarse[lengths.r0 - r0 : lengths.r1 - r0, lengths.c0 - c0 : lengths.c1 - c0] = np.minimum(
        lengths.values, 1.0
    )
    fine = upsample(coarse, factor, ((r1 - r0) * factor, (c1 - c0) * factor)) >= 0.5
    fr0, fc0 = r0 * factor, c0 * factor
    fr1, fc1 = min(fr0 + fine.shape[0], mask.shape[0]), min(fc0 + fine.shape[1], mask.shape[1])
    mask[fr0:fr1, fc0:fc1] |= fine[: fr1 - fr0, : fc1 - fc0]


def project(
    scenes: list[KneeScene],
    cameras: list[Camera],
    texture: np.ndarray,
    texture_amplitude: float = 0.12,
    bone_factor: int = 2,
    soft_factor: int = 2,
    caches: list[SpanCache] | None = None,
) -> Projection:
    """Line integrals and masks of all knees on one detector (cameras share the pixel grid).

    Args:
        scenes: the knees.
        cameras: one per knee (same grid).
        texture: trabecular texture at full resolution (zero mean).
        texture_amplitude: relative modulation of cancellous bone attenuation by the texture.
        bone_factor: bone is traced on a grid this many times coarser than the pixels.
        soft_factor: soft tissue is traced ``soft_factor`` times coarser than the bone grid.
        caches: one per camera, planned (``SpanCache.plan``) for the scene's solids and whatever else
            the caller will trace; fresh ones, planned for the solids, when not given.
    """
    shape = cameras[0].shape
    masks = np.zeros((NUM_STRUCTURES, *shape), dtype=bool)
    fine = np.zeros(shape, dtype=np.float32)
    bone_cams = [coarse_camera(c, bone_factor) for c in cameras]
    soft_cams = [coarse_camera(c, soft_factor) for c in bone_cams]
    soft = np.zeros(soft_cams[0].shape, dtype=np.float32)
    body = np.zeros(soft_cams[0].shape, dtype=np.float32)
    bone_img = np.zeros(bone_cams[0].shape, dtype=np.float32)
    trab_img = np.zeros(bone_cams[0].shape, dtype=np.float32)
    mu_soft, mu_fat, mu_marrow = MU_PER_MM["soft"], MU_PER_MM["fat"], MU_PER_MM["marrow"]
    if caches is None:
        caches = [SpanCache(c) for c in cameras]
        for scene, cache in zip(scenes, caches, strict=True):
            cache.plan(scene.solids)
    for scene, camera, soft_cam, bone_cam, cache in zip(
        scenes, cameras, soft_cams, bone_cams, caches, strict=True
    ):
        skin = union_length([s for s in (trace(lobe, soft_cam) for lobe in scene.skin) if s is not None])
        muscle = union_length([s for s in (trace(lobe, soft_cam) for lobe in scene.muscle) if s is not None])
        if skin is not None:
            skin.add_to(soft, mu_fat)
            skin.add_to(body, 1.0)
        if muscle is not None:
            muscle.add_to(soft, mu_soft - mu_fat)
        for bone in scene.bones:
            outer, inner = bone_lengths(bone, bone_cam)
            if outer is None:
                continue
            if bone.labelled:
                _mask_from_coarse(masks[BY_NAME[bone.name].channel], outer, bone_factor)
            cortex = subtract(outer, inner)
            if cortex is not None:
                cortex.add_to(bone_img, MU_PER_MM["cortical"] - mu_soft)
            if inner is not None:
                inner.add_to(bone_img, mu_marrow - mu_soft)
                weight = np.ones_like(inner.values)
                if bone.trabecular_until_t is not None:
                    t = _axis_t(bone, bone_cam, inner)
                    start, end = bone.trabecular_until_t
                    marrow = smooth((t - start) / (end - start))
                    if bone.distal_cancellous_t is not None:
                        d_start, d_end = bone.distal_cancellous_t
                        marrow = marrow * (1.0 - smooth((t - d_start) / (d_end - d_start)))
                    weight = 1.0 - marrow * 0.85
                    # Denser subchondral bone next to the joint, sparser in the metaphyseal centre.
                    joints = [j for j in (bone.joint_t, bone.distal_joint_t) if j is not None]
                    if joints:
                        joint = np.min([np.abs(t - j) for j in joints], axis=0)
                        weight *= 0.85 + 0.55 * np.exp(-joint / 9.0)
                trab = Field(inner.r0, inner.r1, inner.c0, inner.c1, inner.values * weight)
                trab.add_to(trab_img, MU_PER_MM["trabecular"] - mu_marrow)
        for solid in scene.solids:
            _draw_solid(solid, camera, fine, masks, cache)
    bone_img += upsample(soft, soft_factor, bone_img.shape)
    line = fine
    line += upsample(bone_img, bone_factor, shape)
    cancellous = upsample(trab_img, bone_factor, shape)
    cancellous *= 1.0 + texture_amplitude * texture
    line += cancellous
    body_full = np.repeat(np.repeat(body > 0.5, soft_factor * bone_factor, 0), soft_factor * bone_factor, 1)
    return Projection(line, masks, body_full[: shape[0], : shape[1]])


def _draw_solid(solid: Solid, camera: Camera, line: np.ndarray, masks: np.ndarray, cache: SpanCache) -> None:
    length = solid_length(solid, camera, cache)
    if length is None:
        return
    length.add_to(line, _mu(solid.material) - _mu(solid.replaces))
    if solid.channel is not None:
        length.mask_into(masks[solid.channel], threshold=solid.label_min_path_mm)
