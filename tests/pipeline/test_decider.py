import numpy as np
import pytest

from mpox_aism.contracts.decision import REVIEW_REASONS, STATES
from mpox_aism.contracts.labels import LABELS
from mpox_aism.pipeline.crops import Crop
from mpox_aism.pipeline.decider import Decider, DecisionConfig
from mpox_aism.pipeline.regions import Region


def _crop(q=1.0, kind="face"):
    return Crop(np.zeros((8, 8, 3), np.uint8), Region(kind, 0, 0, 8, 8, 1.0), 1.0, 100.0, 128.0, quality=q)


def _p(label, p):
    v = np.full(len(LABELS), (1 - p) / (len(LABELS) - 1))
    v[LABELS.index(label)] = p
    return v


def test_suspected_needs_min_crops_threshold_and_consensus():
    d = Decider(DecisionConfig(min_crops=3))
    assert d.add(1, _crop(), _p("mpox", 0.9), 1.0) is None
    assert d.add(1, _crop(), _p("mpox", 0.9), 2.0) is None
    out = d.add(1, _crop(), _p("mpox", 0.9), 3.0)
    assert out.state == "suspected" and out.label == "mpox" and out.n_crops == 3
    assert out.first_timestamp == 1.0 and out.last_timestamp == 3.0 and out.region_kinds == ["face"]
    assert d.add(1, _crop(), _p("mpox", 0.9), 4.0) is None  # unchanged: no repeat alert
    assert d.end(1) is None


def test_median_ignores_one_odd_crop_and_low_confidence_goes_to_review():
    d = Decider(DecisionConfig(min_crops=3))
    for p in (_p("normal", 0.9), _p("mpox", 0.99), _p("normal", 0.9)):
        out = d.add(7, _crop(), p, 0.0)
    assert out.state == "clear" and out.label == "normal"
    d2 = Decider(DecisionConfig(min_crops=2))
    d2.add(2, _crop(), _p("eczema", 0.4), 0.0)
    out = d2.add(2, _crop(), _p("eczema", 0.45), 0.0)
    assert out.state == "review" and out.reason == "low_confidence"


def test_short_track_ends_in_review_with_its_best_crop():
    d = Decider(DecisionConfig(min_crops=5))
    best = _crop(q=9.0)
    d.add(3, _crop(q=1.0), _p("normal", 0.95), 0.0)
    d.add(3, best, _p("normal", 0.95), 0.0)
    out = d.end(3)
    assert out.state == "review" and out.reason == "too_few_crops" and out.final and out.best_crop is best.image


def test_notifiable_classes_are_checked():
    with pytest.raises(ValueError, match="smallpox"):
        Decider(DecisionConfig(notifiable=("smallpox",)))
    d = Decider(DecisionConfig(min_crops=1, notifiable=("mpox", "measles")))
    assert d.add(1, _crop(), _p("measles", 0.8), 0.0).state == "suspected"


def test_hysteresis_a_new_state_must_hold() -> None:
    """A track hovering at the threshold does not flap: each flap would be an event for a person."""
    d = Decider(DecisionConfig(min_crops=1, window=1, hold=3))
    assert d.add(1, _crop(), _p("normal", 0.9), 0.0).state == "clear"  # the first decision at once
    assert d.add(1, _crop(), _p("normal", 0.5), 0.0) is None  # review once…
    assert d.add(1, _crop(), _p("normal", 0.9), 0.0) is None  # …then back: the streak is broken
    assert d.add(1, _crop(), _p("normal", 0.5), 0.0) is None
    assert d.add(1, _crop(), _p("normal", 0.5), 0.0) is None
    out = d.add(1, _crop(), _p("normal", 0.5), 0.0)  # the third in a row
    assert out is not None and out.state == "review"


def test_without_hysteresis_every_change_is_emitted() -> None:
    d = Decider(DecisionConfig(min_crops=1, window=1, hold=1))
    states = [d.add(1, _crop(), _p("normal", p), 0.0) for p in (0.9, 0.5, 0.9)]
    assert [s.state for s in states if s] == ["clear", "review", "clear"]


def test_the_final_decision_is_not_held_back() -> None:
    d = Decider(DecisionConfig(min_crops=1, window=1, hold=3))
    d.add(1, _crop(), _p("normal", 0.9), 0.0)
    d.add(1, _crop(), _p("mpox", 0.9), 0.0)  # one classification: not yet emitted
    out = d.end(1)
    assert out is not None and out.state == "suspected" and out.final


def test_hysteresis_does_not_hold_an_alert_that_alternates_with_review() -> None:
    """After `clear`, a window flipping between suspected and review has left `clear`: it is said."""
    d = Decider(DecisionConfig(min_crops=1, window=1, hold=3))
    assert d.add(1, _crop(), _p("normal", 0.9), 0.0).state == "clear"
    assert d.add(1, _crop(), _p("mpox", 0.9), 0.0) is None
    assert d.add(1, _crop(), _p("mpox", 0.5), 0.0) is None
    out = d.add(1, _crop(), _p("mpox", 0.9), 0.0)
    assert out is not None and out.state == "suspected"  # the latest state, after 3 away from `clear`


def test_close_range_crops_do_not_vote_for_an_alert() -> None:
    """Skin filling the frame is where the model calls healthy skin mpox: a close-up track goes to a person."""
    d = Decider(DecisionConfig(min_crops=3))
    for _ in range(3):
        out = d.add(1, _crop(kind="close"), _p("mpox", 0.9), 0.0)
    assert out.state == "review" and out.reason == "close_range_only" and out.region_kinds == ["close"]
    for _ in range(3):  # a non-notifiable answer needs no votes: a close-up can still be cleared
        out = d.add(2, _crop(kind="close"), _p("normal", 0.9), 0.0)
    assert out.state == "clear"
    on = Decider(DecisionConfig(min_crops=3, close_range_alerts=True))
    for _ in range(3):
        out = on.add(1, _crop(kind="close"), _p("mpox", 0.9), 0.0)
    assert out.state == "suspected"


def test_an_alert_on_a_mixed_track_must_be_carried_by_face_and_hand_crops() -> None:
    carried = Decider(DecisionConfig(min_crops=4, consensus=0.5))
    for kind in ("face", "close", "hand", "close"):
        out = carried.add(1, _crop(kind=kind), _p("mpox", 0.9), 0.0)
    assert out.state == "suspected" and out.region_kinds == ["close", "face", "hand"]
    mostly_close = Decider(DecisionConfig(min_crops=4, consensus=0.5))
    for kind in ("face", "close", "close", "close"):
        out = mostly_close.add(1, _crop(kind=kind), _p("mpox", 0.9), 0.0)
    assert out.state == "review" and out.reason == "close_range_only"


def test_an_unfamiliar_crop_votes_for_nothing() -> None:
    """A familiar track decides as before; unfamiliar crops leave the median and the consensus."""
    d = Decider(DecisionConfig(min_crops=3, hold=1))
    for t in range(2):
        d.add(1, _crop(), _p("normal", 0.9), float(t), familiar=True)
    # one unfamiliar crop the model calls mpox cannot tip a healthy track, however confident
    out = d.add(1, _crop(), _p("mpox", 0.99), 2.0, familiar=False)
    assert out.state == "clear" and out.label == "normal" and out.unfamiliar == 1 and out.reason is None
    # without a familiarity score (None) every crop counts, as before
    d2 = Decider(DecisionConfig(min_crops=3))
    for t in range(3):
        out = d2.add(2, _crop(), _p("mpox", 0.9), float(t), familiar=None)
    assert out.state == "suspected" and out.unfamiliar == 0


def test_a_mostly_unfamiliar_track_goes_to_review_with_its_reason() -> None:
    d = Decider(DecisionConfig(min_crops=3))
    d.add(3, _crop(), _p("normal", 0.95), 0.0, familiar=True)
    d.add(3, _crop(), _p("normal", 0.95), 1.0, familiar=False)
    out = d.add(3, _crop(), _p("normal", 0.95), 2.0, familiar=False)
    assert out.state == "review" and out.reason == "unfamiliar" and out.unfamiliar == 2
    # an unfamiliar rash the model is sure is mpox does not raise an alert either
    d2 = Decider(DecisionConfig(min_crops=3))
    for t in range(3):
        out = d2.add(4, _crop(), _p("mpox", 0.99), float(t), familiar=False)
    assert out.state == "review" and out.reason == "unfamiliar"


def test_unfamiliar_share_is_checked() -> None:
    with pytest.raises(ValueError):
        DecisionConfig(unfamiliar_share=1.0)



def _leaning_to_mpox() -> list[np.ndarray]:
    """Five crops whose median is mpox at 0.7 while only three of them put mpox first."""
    crops = [_p("mpox", 0.9), _p("mpox", 0.9), _p("mpox", 0.7), _p("normal", 0.5), _p("normal", 0.5)]
    for p in crops[3:]:
        p[LABELS.index("mpox")] = 0.45  # mpox second: the median stays mpox, the vote does not
    return [p / p.sum() for p in crops]


def test_no_consensus_names_the_disagreement() -> None:
    d = Decider(DecisionConfig(min_crops=5, consensus=0.8))
    for i, p in enumerate(_leaning_to_mpox()):
        out = d.add(1, _crop(), p, float(i))
    assert out.label == "mpox" and out.probability >= 0.6
    assert out.state == "review" and out.reason == "no_consensus"


def test_every_state_and_reason_is_reachable_from_crops() -> None:
    """Each state and each review reason, from a track of crops; only reviews carry a reason."""
    def run(probs, kinds=None, familiar=None, cfg=None, end=False):
        d = Decider(cfg or DecisionConfig(min_crops=3))
        out = None
        for i, p in enumerate(probs):
            kind = kinds[i] if kinds else "face"
            out = d.add(1, _crop(kind=kind), p, float(i), i, None if familiar is None else familiar[i]) or out
        return d.end(1) if end else out

    outcomes = {
        ("suspected", None): run([_p("mpox", 0.9)] * 3),
        ("clear", None): run([_p("normal", 0.9)] * 3),
        ("other_condition", None): run([_p("chickenpox", 0.9)] * 3),
        ("review", "low_confidence"): run([_p("eczema", 0.4)] * 3),
        ("review", "no_consensus"): run(_leaning_to_mpox(), cfg=DecisionConfig(min_crops=5, consensus=0.8)),
        ("review", "close_range_only"): run([_p("mpox", 0.9)] * 3, kinds=["close"] * 3),
        ("review", "unfamiliar"): run([_p("normal", 0.9)] * 3, familiar=[False, False, True]),
        ("review", "too_few_crops"): run([_p("normal", 0.9)] * 2, end=True),
    }
    for expected, out in outcomes.items():
        assert (out.state, out.reason) == expected
    assert {s for s, _ in outcomes} == set(STATES) and {r for _, r in outcomes} - {None} == set(REVIEW_REASONS)
