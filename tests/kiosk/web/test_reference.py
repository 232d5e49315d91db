"""Reference photos: the typical ones of a class, chosen by the deployed classifier, served small."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from mpox_aism.kiosk.web.reference import ReferenceLibrary, open_library
from tests.conftest import default_model_or_skip, link_photos


@pytest.fixture(scope="module")
def classifier() -> Iterator[Any]:
    from mpox_aism.inference.backends import load_classifier

    with load_classifier("onnxruntime", default_model_or_skip()) as clf:
        yield clf


def test_three_typical_photos_the_model_is_surest_of(tmp_path: Path, classifier: Any) -> None:
    folder = link_photos(tmp_path, "mpox", 8)
    lib = ReferenceLibrary(tmp_path, classifier, candidates=8)
    images = lib.images("mpox")
    assert len(images) == 3
    decoded = [cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
               for b in images]
    assert all(max(im.shape[:2]) <= 256 for im in decoded)
    from mpox_aism.contracts.images import list_images, load_rgb

    p = classifier.predict([load_rgb(f) for f in list_images(folder)])[:, 0]
    shown = classifier.predict(decoded)[:, 0]
    assert min(shown) >= sorted(p)[-4] - 0.05  # the chosen are the top three (small JPEGs move p a little)
    assert lib.images("bullous") == []  # no folder for that class
    with pytest.raises(KeyError):
        lib.images("smallpox")


def test_off_when_unset_or_missing_with_one_clear_line(tmp_path: Path, classifier: Any, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="mpox_aism.kiosk.web.reference"):
        assert open_library(None, classifier) is None
        assert open_library(str(tmp_path / "nope"), classifier) is None
    text = caplog.text
    assert "reference images: off (set reference_dir" in text and "is not a folder" in text


def test_over_http(tmp_path: Path, classifier: Any) -> None:
    httpx = pytest.importorskip("httpx")
    from mpox_aism.kiosk.web.app import create_app
    from mpox_aism.kiosk.web.server import ServerThread
    from mpox_aism.kiosk.web.staff import add_staff_routes

    (tmp_path / "refs").mkdir()
    link_photos(tmp_path / "refs", "normal", 4)
    app = create_app(classifier=classifier, token=None)
    from mpox_aism.kiosk.accounts import Accounts
    from tests.kiosk.web.test_auth import FAST, login

    library = ReferenceLibrary(tmp_path / "refs", classifier)
    accounts = Accounts(tmp_path / "staff.sqlite3", hasher=FAST)
    accounts.add("view", "viewer password 1", "viewer")
    add_staff_routes(app, events_provider=list, frame_provider=lambda _n: None, cameras=list,
                     reviews_path=tmp_path / "reviews.sqlite3", references=library, accounts=accounts)
    with ServerThread(app) as s:
        c, _ = login(s.url, "view", "viewer password 1")
        assert httpx.get(f"{s.url}/api/reference/normal").status_code == 401  # staff only
        body = c.get("/api/reference/normal").json()
        assert body == {"label": "normal", "images": [f"/api/reference/normal/{i}.jpg" for i in range(3)]}
        r = c.get(body["images"][0])
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert c.get("/api/reference/normal/3.jpg").status_code == 404
        assert c.get("/api/reference/measles").json()["images"] == []
        assert c.get("/api/reference/smallpox").status_code == 404
        c.close()
