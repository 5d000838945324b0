"""Scene items: solids made of primitives with a material and an optional label channel."""

from __future__ import annotations

from dataclasses import dataclass, field

from orthoseg.synth.geometry import Camera, Field, Primitive, Span, intersect, union_length
from orthoseg.synth.span_cache import SpanCache


@dataclass
class Solid:
    """A material region: ``union(parts)`` intersected with every ``clips`` region, minus ``minus``.

    Attributes:
        name: what it is (for debugging and tests).
        material: key of ``physics.MU_PER_MM`` or a number (1/mm).
        parts: primitives whose union is the solid.
        clips: regions the solid is confined to (all intersected).
        minus: a convex region removed from the solid (e.g. the bone a femoral component wraps).
        channel: label-contract channel it is drawn into, or None (no mask).
        replaces: material whose attenuation the solid displaces ('soft' in the envelope, bone for
            cement and lucent lines).
        fine: rendered at full resolution (metal and cement edges must stay razor sharp).
        label_min_path_mm: a pixel is labelled only where its ray crosses at least this much of the
            solid (mm): a sheet of cement seen en face is too faint to see, and nobody would label it.
    """

    name: str
    material: str | float
    parts: list[Primitive]
    clips: list[Primitive] = field(default_factory=list)
    minus: Primitive | None = None
    channel: int | None = None
    replaces: str | float = "soft"
    fine: bool = True
    label_min_path_mm: float = 0.02


def solid_length(solid: Solid, camera: Camera, cache: SpanCache | None = None) -> Field | None:
    """Path length (mm) of every pixel's ray inside ``solid``.

    Clips are traced first, so the parts (often whole bones) are only traced inside the clips' boxes.
    ``cache`` (on ``camera``) shares the spans of primitives that other solids of the film trace too.
    """
    if cache is None:
        cache = SpanCache(camera)
    trace = cache.trace
    clip_spans: list[Span] = []
    window = None
    for clip in solid.clips:
        span = trace(clip, window)
        if span is None:
            return None
        clip_spans.append(span)
        window = span.box
    spans: list[Span] = [s for s in (trace(p, window) for p in solid.parts) if s is not None]
    for clip_span in clip_spans:
        spans = [x for x in (intersect(s, clip_span) for s in spans) if x is not None]
    if not spans:
        return None
    total = union_length(spans)
    if solid.minus is not None and total is not None:
        minus_span = trace(solid.minus, total.box)
        if minus_span is not None:
            inside = union_length([x for x in (intersect(s, minus_span) for s in spans) if x is not None])
            if inside is not None:
                sl = (
                    slice(inside.r0 - total.r0, inside.r1 - total.r0),
                    slice(inside.c0 - total.c0, inside.c1 - total.c0),
                )
                total.values[sl] -= inside.values
                total.values[total.values < 1e-4] = 0.0
    return total
