import numpy as np

from mpox_aism.pipeline.crops import Crop
from mpox_aism.pipeline.regions import Region
from mpox_aism.pipeline.tracker import Tracker, TrackerConfig

FRAME = np.full((360, 640, 3), 128, np.uint8)


def _crop(kind, x0, y0, x1, y1):
    return Crop(np.zeros((y1 - y0, x1 - x0, 3), np.uint8), Region(kind, x0, y0, x1, y1, 0.9), 1.0, 100.0, 128.0)


def test_face_and_its_hands_form_one_track_with_a_stable_id():
    t = Tracker()
    ids = set()
    for i in range(10):
        dx = 3 * i  # the person drifts slowly
        crops = [_crop("face", 300 + dx, 50, 380 + dx, 130), _crop("hand", 250 + dx, 200, 300 + dx, 250),
                 _crop("hand", 400 + dx, 210, 450 + dx, 260)]
        up = t.update(FRAME, i, crops)
        ids |= {tid for tid, _ in up.assigned}
    assert ids == {1} and t.total_tracks == 1


def test_two_people_two_tracks_and_far_hand_alone():
    t = Tracker()
    up = t.update(FRAME, 0, [_crop("face", 50, 50, 110, 110), _crop("face", 500, 50, 560, 110),
                             _crop("hand", 300, 300, 330, 330)])
    assert len({tid for tid, _ in up.assigned}) == 3


def test_tracks_end_after_max_age():
    t = Tracker(TrackerConfig(max_age=5))
    t.update(FRAME, 0, [_crop("face", 50, 50, 110, 110)])
    ended = []
    for i in range(1, 10):
        ended += t.update(FRAME, i, []).ended
    assert ended == [1] and not t.tracks


def test_scene_cut_by_still_and_by_appearance():
    t = Tracker()
    t.update(FRAME, 0, [_crop("close", 0, 0, 640, 360)], still_id=0)
    up = t.update(FRAME, 1, [_crop("close", 0, 0, 640, 360)], still_id=1)
    assert up.scene_cut and up.ended == [1] and up.assigned[0][0] == 2
    other = np.full_like(FRAME, 230)  # a different close-up: same position, different picture
    up = t.update(other, 2, [_crop("close", 0, 0, 640, 360)])
    assert up.scene_cut and up.assigned[0][0] == 3
