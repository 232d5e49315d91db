from dataclasses import replace

from mpox_aism.bench.pipeline import track_outcomes, track_reasons
from mpox_aism.pipeline.decider import Decider, DecisionConfig
from tests.pipeline.test_decider import _crop, _p


def test_track_outcomes_count_people_by_their_last_state_and_split_close_only_tracks() -> None:
    d = Decider(DecisionConfig(min_crops=1, hold=1))
    face = d.add(1, _crop(kind="face"), _p("mpox", 0.9), 0.0)
    close = d.add(2, _crop(kind="close"), _p("mpox", 0.9), 0.0)
    assert face is not None and close is not None and (face.state, close.state) == ("suspected", "review")
    out = track_outcomes([face, close, replace(close, track_id=3, state="clear", reason=None)])
    # the same shape as before event-v2, one count per state (other_condition is a state now)
    assert out == {"all": {"clear": 1, "other_condition": 0, "review": 1, "suspected": 1},
                   "close_only": {"clear": 1, "other_condition": 0, "review": 1, "suspected": 0}}
    assert track_reasons([face, close]) == {"unfamiliar": 0, "too_few_crops": 0, "low_confidence": 0,
                                            "no_consensus": 0, "close_range_only": 1}
