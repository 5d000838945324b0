"""Spans of a film's primitives on one camera, traced once and sliced for every solid that needs them.

A knee's solids share the bones' lobes: a cement mantle, a radiolucent line, its sclerotic rim and the
truth's interface probe all cut the same femur or tibia, each within its own clip's box, and the clips
themselves repeat (a line and its rim lie in one region). Tracing a bone lobe is the simulator's largest
cost, so ``plan`` first gathers every box a lobe is asked for and traces it once over their union where
that is not larger than the boxes apart; later requests inside a traced box are slices of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from orthoseg.synth.geometry import Box, Camera, Primitive, Span, _pixel_box, trace

if TYPE_CHECKING:
    from orthoseg.synth.solids import Solid


def _area(box: Box) -> int:
    return (box[1] - box[0]) * (box[3] - box[2])


def _inside(inner: Box, outer: Box) -> bool:
    return outer[0] <= inner[0] and inner[1] <= outer[1] and outer[2] <= inner[2] and inner[3] <= outer[3]


def _clamp(box: Box | None, within: Box | None) -> Box | None:
    """The pixel box ``trace`` evaluates for a primitive of box ``box`` (None when it is empty)."""
    if box is None:
        return None
    if within is not None:
        box = (max(box[0], within[0]), min(box[1], within[1]), max(box[2], within[2]), min(box[3], within[3]))
    return box if box[0] < box[1] and box[2] < box[3] else None


class SpanCache:
    """Traced spans of primitives on one camera (the camera of one knee on one film).

    Spans handed out may be views of a cached span: callers must not write into their ``lo``/``hi``.
    Requests are keyed by the primitive object, so the cache lives as long as the film's scene.
    """

    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        self._spans: dict[int, list[tuple[Box, Span]]] = {}
        self._keep: dict[int, Primitive] = {}  # holds the keys' objects alive, so ids stay unique
        self._boxes: dict[int, Box | None] = {}

    def _request(self, prim: Primitive, within: Box | None) -> Box | None:
        """The pixel box ``trace`` would evaluate (None when it is empty)."""
        key = id(prim)
        if key not in self._boxes:
            self._boxes[key] = _pixel_box(prim, self.camera)
            self._keep[key] = prim
        return _clamp(self._boxes[key], within)

    def trace(self, prim: Primitive, within: Box | None = None) -> Span | None:
        """``geometry.trace(prim, camera, within)``, from the cache where a traced box covers it."""
        box = self._request(prim, within)
        if box is None:
            return None
        for cached_box, span in self._spans.get(id(prim), ()):
            if _inside(box, cached_box):
                return _slice(span, box)
        traced = trace(prim, self.camera, box)
        self._store(prim, box, traced)
        return traced

    def _store(self, prim: Primitive, box: Box, span: Span | None) -> None:
        if span is None:
            return
        self._keep[id(prim)] = prim
        self._spans.setdefault(id(prim), []).append((box, span))

    def plan(self, solids: Iterable[Solid]) -> None:
        """Trace every part that several of ``solids`` ask for once, over the union of their boxes
        (where the union is no larger than the boxes apart)."""
        wanted: dict[int, list[Box]] = {}
        parts: dict[int, Primitive] = {}
        for solid in solids:
            reaches, window = clip_window(solid, self)
            if not reaches:
                continue
            for part in solid.parts:
                box = self._request(part, window)
                if box is not None:
                    wanted.setdefault(id(part), []).append(box)
                    parts[id(part)] = part
        for key, boxes in wanted.items():
            if len(boxes) < 2:
                continue
            union = (
                min(b[0] for b in boxes),
                max(b[1] for b in boxes),
                min(b[2] for b in boxes),
                max(b[3] for b in boxes),
            )
            if _area(union) <= sum(_area(b) for b in boxes):
                self._store(parts[key], union, trace(parts[key], self.camera, union))


def clip_window(solid: Solid, cache: SpanCache) -> tuple[bool, Box | None]:
    """Whether the solid's clips reach the film, and the box ``solid_length`` then traces its parts in
    (None: the whole film)."""
    window: Box | None = None
    for clip in solid.clips:
        span = cache.trace(clip, window)
        if span is None:
            return False, None
        window = span.box
    return True, window


def _slice(span: Span, box: Box) -> Span:
    if box == span.box:
        return span
    rows = slice(box[0] - span.r0, box[1] - span.r0)
    cols = slice(box[2] - span.c0, box[3] - span.c0)
    return Span(box[0], box[1], box[2], box[3], span.lo[rows, cols], span.hi[rows, cols])
