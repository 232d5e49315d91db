"""The shadow head: decides per track beside the current one, only counts, and never fails a frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpox_aism.contracts.labels import LABELS
from mpox_aism.inference.classifier import Classification
from mpox_aism.pipeline.crops import Crop
from mpox_aism.pipeline.decider import DecisionConfig
from mpox_aism.pipeline.regions import Region
from mpox_aism.pipeline.shadow import MAX_ERRORS, Shadow


@dataclass
class _Meta:
    model_version: str = "shadow000001"


class FakeHead:
    """Calls every crop ``label`` with 0.9; raises while ``broken``."""

    labels = LABELS
    meta = _Meta()

    def __init__(self, label: str) -> None:
        self.label, self.broken = label, False

    def classify(self, crops: list[np.ndarray]) -> Classification:
        if self.broken:
            raise RuntimeError("gone")
        p = np.full(len(LABELS), 0.1 / (len(LABELS) - 1))
        p[LABELS.index(self.label)] = 0.9
        return Classification(np.tile(p, (len(crops), 1)))


def _due(tid: int) -> list[tuple[int, Crop]]:
    return [(tid, Crop(np.zeros((8, 8, 3), np.uint8), Region("face", 0, 0, 8, 8, 1.0), 0.5, 1.0, 1.0))]


def test_counts_decisions_and_compares_ended_tracks():
    shadow = Shadow(FakeHead("mpox"), DecisionConfig(min_crops=2))  # type: ignore[arg-type]
    for i in range(3):
        shadow.add(_due(1), float(i), i)
        shadow.add(_due(2), float(i), i)
    shadow.end(1, "suspected")  # the same end state
    shadow.end(2, "clear")  # a different one
    shadow.end(3, None)  # neither head decided: not compared
    c = shadow.counts()
    assert c.decisions["suspected"] == 2 and c.compared == 2 and c.differ == 1 and c.errors == 0 and c.active


def test_errors_are_counted_then_the_shadow_switches_off():
    head = FakeHead("normal")
    shadow = Shadow(head)  # type: ignore[arg-type]
    head.broken = True
    for i in range(MAX_ERRORS + 2):
        shadow.add(_due(1), float(i), i)  # never raises
    shadow.end(1, "clear")
    c = shadow.counts()
    assert c.errors == MAX_ERRORS and not c.active and c.compared == 0


def test_the_metrics_feed_counts_shadow_deltas(tmp_path):
    from mpox_aism.kiosk.camera import CameraState
    from mpox_aism.kiosk.config import CameraConfig
    from mpox_aism.kiosk.metrics import KioskMetrics
    from mpox_aism.kiosk.outbox import Outbox
    from mpox_aism.kiosk.status import MetricsFeed
    from mpox_aism.pipeline.pipeline import PipelineCounts
    from mpox_aism.pipeline.shadow import ShadowCounts

    metrics, cam = KioskMetrics(), CameraState(CameraConfig(name="desk", source=str(tmp_path)))
    feed = MetricsFeed(metrics)
    with Outbox(tmp_path / "o.sqlite3") as ob:
        for n in (1, 3):  # counters copied twice: the metrics get the deltas, not the sums
            cam.counts = PipelineCounts(shadow=ShadowCounts("v", {"review": n}, compared=n, differ=1, errors=0))
            feed.update({"desk": cam}, ob, None)
    text = metrics.exposition().decode()
    assert 'mpox_aism_shadow_decisions_total{state="review"} 3.0' in text
    assert "mpox_aism_shadow_tracks_compared_total 3.0" in text and "mpox_aism_shadow_tracks_differ_total 1.0" in text
