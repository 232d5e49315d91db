"""``mpox-aism bench pipeline``: fps, per-stage time, capture→decision latency, decisions, on a source.

File sources are read as fast as possible (no pacing), so ``fps`` is the processing rate the
box sustains; a 30 fps camera is real time when ``fps`` ≥ 30. Latency is measured per processed
frame from its capture timestamp to the end of its last stage (the moment a decision that uses it
can be emitted).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from mpox_aism.contracts.decision import REVIEW_REASONS, STATES
from mpox_aism.contracts.machine import describe_machine
from mpox_aism.contracts.model import default_backend
from mpox_aism.pipeline.decider import Decision, DecisionConfig
from mpox_aism.pipeline.pipeline import CLASSIFY_STRIDE, DETECT_STRIDE


def track_outcomes(last: Iterable[Decision]) -> dict[str, dict[str, int]]:
    """Tracks by the state they ended in, split by whether only close-range crops fed them.

    ``decisions`` counts events (one track may emit several); this counts people, and the split
    shows what the close-range guard (``DecisionConfig.close_range_alerts``) changes.
    """
    out = {"all": Counter[str](), "close_only": Counter[str]()}
    for d in last:
        out["all"][d.state] += 1
        if set(d.region_kinds) == {"close"}:
            out["close_only"][d.state] += 1
    return {k: {s: c[s] for s in STATES} for k, c in out.items()}


def track_reasons(last: Iterable[Decision]) -> dict[str, int]:
    """Tracks that ended in review, by the reason of their last decision."""
    c = Counter(d.reason for d in last if d.reason is not None)
    return {r: c[r] for r in REVIEW_REASONS}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark the camera pipeline on a source.", add_help=add_help)
    p.add_argument("--source", required=True, help="video file, image folder, rtsp:// URL or camera index")
    p.add_argument("--model", default=None, help="model directory (default: models/default)")
    p.add_argument("--backend", default=None, help="classifier backend (default: onnxruntime if model.onnx "
                   "exists, else torch)")
    p.add_argument("--detect-stride", type=int, default=DETECT_STRIDE)
    p.add_argument("--hold", type=int, default=DecisionConfig().hold,
                   help="decision hysteresis: classifications a new state must hold (1 = none)")
    p.add_argument("--close-range-alerts", action="store_true",
                   help="let close-range crops vote for an alert (off by default: see mpox_aism/pipeline/decider.py)")
    p.add_argument("--classify-stride", type=int, default=CLASSIFY_STRIDE)
    p.add_argument("--max-hands", type=int, default=4)
    p.add_argument("--hold-frames", type=int, default=15, help="frames per still for an image folder")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0 = whole source)")
    p.add_argument("--threads", type=int, default=None, help="torch/ORT CPU threads")
    p.add_argument("--json", required=True, help="output JSON file")
    return p


def main(args: argparse.Namespace) -> dict:
    import torch

    from mpox_aism.inference.backends import load_classifier
    from mpox_aism.pipeline.pipeline import Pipeline, PipelineConfig
    from mpox_aism.pipeline.regions import RegionDetector
    from mpox_aism.pipeline.sources import open_source

    if args.threads:
        torch.set_num_threads(args.threads)
    backend = args.backend or default_backend(args.model)
    opts = {"threads": args.threads} if backend == "onnxruntime" and args.threads else {}
    config = PipelineConfig(detect_stride=args.detect_stride, classify_stride=args.classify_stride,
                            decision=DecisionConfig(hold=args.hold, close_range_alerts=args.close_range_alerts))
    with load_classifier(backend, args.model, **opts) as clf, RegionDetector(max_hands=args.max_hands) as det, \
            open_source(args.source, hold_frames=args.hold_frames) as source:
        pipe = Pipeline(clf, det, config)
        last: dict[int, Decision] = {}  # each track's latest decision: where it ended
        t0, cpu0 = time.perf_counter(), time.process_time()
        for n, frame in enumerate(source, start=1):
            last.update((d.track_id, d) for d in pipe.process(frame).decisions)
            if args.max_frames and n >= args.max_frames:
                break
        last.update((d.track_id, d) for d in pipe.finish())
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        dropped = source.stats().dropped_frames
    summary = pipe.stats.summary()
    n = max(1, summary["frames"])
    stage_cpu = summary["stage_process_cpu_ms"]
    # what the process's CPU went to per frame: each stage, and the rest (reading and decoding the source)
    cpu_ms = {**stage_cpu, "read_and_other": round(1000 * cpu / n - sum(stage_cpu.values()), 3),
              "total": round(1000 * cpu / n, 3)}
    report = {
        "frames": summary["frames"],
        "fps": round(summary["frames"] / wall, 2) if wall > 0 else 0.0,
        "stage_ms": summary["stage_ms"],
        "cpu_ms_per_frame": cpu_ms,
        "latency_ms": summary["latency_ms"],
        "dropped_frames": dropped,
        "frames_with_face": summary["frames_with_face"],
        "frames_with_hand": summary["frames_with_hand"],
        "frames_with_close": summary["frames_with_close"],
        "tracks": pipe.tracks,
        "decisions": summary["decisions"],
        "review_reasons": summary["review_reasons"],
        "track_outcomes": track_outcomes(last.values()),
        "track_review_reasons": track_reasons(last.values()),
        "crops": summary["crops"],
        "rejected_crops": summary["rejected_crops"],
        "errors": summary["errors"],
        "wall_s": round(wall, 2),
        "config": {"backend": backend, "detect_stride": args.detect_stride, "hold": args.hold,
                   "close_range_alerts": args.close_range_alerts,
                   "classify_stride": args.classify_stride, "max_hands": args.max_hands},
        "source": args.source,
        "command": "mpox-aism " + shlex.join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": asdict(describe_machine()),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("frames", "fps", "stage_ms", "cpu_ms_per_frame", "latency_ms", "tracks",
                                             "decisions",
                                             "review_reasons", "track_outcomes", "track_review_reasons")}))
    return report
