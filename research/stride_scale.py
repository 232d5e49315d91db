"""What stretching the strides does to decisions: each clip as a 10 fps live camera, at stride scale 1, 2, 3.

Under load a camera stretches both strides (``mpox_aism.pipeline.load``), so it detects and classifies on fewer
frames. This measures the price on the footage we have: per track, whether it is decided before it ends, the
delay from its first crop to its first decision (in the camera's seconds), and its final state. Each clip is
turned into the frames a 10 fps camera would deliver (every 3rd frame of a 30 fps clip), numbered as a live
source numbers them, and run through the real pipeline (shipped model, MediaPipe detector).

    python -m research.stride_scale --json runs/streams/s13/stride_scale.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

from mpox_aism.inference.backends import load_classifier
from mpox_aism.pipeline.pipeline import CLASSIFY_STRIDE, DETECT_STRIDE, Pipeline, PipelineConfig
from mpox_aism.pipeline.regions import RegionDetector
from mpox_aism.pipeline.sources import VideoFileSource

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAMERA_FPS = 10.0


@dataclass
class TrackOutcome:
    track_id: int
    first_frame: int
    decided_before_end: bool = False
    first_decision_s: float | None = None
    final_state: str | None = None
    states: list[str] = field(default_factory=list)


def run(clip: Path, scale: int, model: str) -> list[TrackOutcome]:
    with VideoFileSource(clip) as src:
        step = max(1, round(src.fps / CAMERA_FPS))
        frames = [f for i, f in enumerate(src) if i % step == 0]
    frames = [replace(f, index=i, timestamp=i / CAMERA_FPS) for i, f in enumerate(frames)]
    config = PipelineConfig(detect_stride=DETECT_STRIDE * scale, classify_stride=CLASSIFY_STRIDE * scale)
    tracks: dict[int, TrackOutcome] = {}
    with load_classifier("onnxruntime", model) as clf, RegionDetector() as det:
        pipe = Pipeline(clf, det, config)
        for d in pipe.run(frames):
            t = tracks.setdefault(d.track_id, TrackOutcome(d.track_id, d.first_frame))
            t.states.append(d.state)
            if d.final:
                t.final_state = d.state
            elif not t.decided_before_end:
                t.decided_before_end = True
                t.first_decision_s = round((d.last_frame - d.first_frame) / CAMERA_FPS, 2)
    for t in tracks.values():
        t.final_state = t.final_state or (t.states[-1] if t.states else None)
    return sorted(tracks.values(), key=lambda t: t.track_id)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", nargs="*", default=[str(c) for c in sorted((SHARED / "video").glob("*"))])
    p.add_argument("--model", default="models/default")
    p.add_argument("--json", required=True)
    args = p.parse_args()
    report: dict[str, dict] = {}
    for clip in map(Path, args.clips):
        for scale in (1, 2, 3):
            outcomes = run(clip, scale, args.model)
            delays = [t.first_decision_s for t in outcomes if t.first_decision_s is not None]
            report[f"{clip.name}@{scale}"] = {
                "tracks": len(outcomes),
                "decided_before_end": sum(t.decided_before_end for t in outcomes),
                "first_decision_s": {"median": statistics.median(delays) if delays else None,
                                     "max": max(delays) if delays else None},
                "final_states": [t.final_state for t in outcomes],
                "outcomes": [t.__dict__ for t in outcomes],
            }
            r = report[f"{clip.name}@{scale}"]
            print(clip.name, scale, r["tracks"], r["decided_before_end"], r["first_decision_s"], r["final_states"],
                  flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
