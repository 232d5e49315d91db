"""Reference photos beside an answer, as the paper's app shows: "this is what <class> usually looks like".

``reference_dir`` holds a folder per class of photos the operator is licensed to show. For each class
the library shows up to ``per_class`` *typical* photos: among the first ``candidates`` of the folder
(sorted by name, so the choice is repeatable), those the deployed classifier gives that class the
highest probability — a clinician comparing an answer with its references sees what the model means
by the class. They are chosen on first request per class and kept as small JPEGs (never the originals).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np

from mpox_aism.contracts.images import DatasetError, list_images, load_rgb
from mpox_aism.contracts.preprocess import fit_within
from mpox_aism.inference.classifier import CropClassifier

log = logging.getLogger(__name__)


class ReferenceLibrary:
    def __init__(self, root: str | Path, classifier: CropClassifier, *, per_class: int = 3, candidates: int = 24,
                 max_side: int = 256) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"reference_dir {self.root} is not a folder")
        self.classifier, self.labels = classifier, tuple(classifier.labels)
        self.per_class, self.candidates, self.max_side = per_class, candidates, max_side
        self.folders = {label: self.root / label for label in self.labels if (self.root / label).is_dir()}
        self._chosen: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return (f"reference images from {self.root}: {', '.join(self.folders) or 'no class folders'}"
                + (f" (none for {', '.join(x for x in self.labels if x not in self.folders)})"
                   if len(self.folders) < len(self.labels) else ""))

    def images(self, label: str) -> list[bytes]:
        """JPEG bytes of up to ``per_class`` typical photos of ``label``; [] when it has no folder."""
        if label not in self.labels:
            raise KeyError(label)
        with self._lock:
            if label not in self._chosen:
                self._chosen[label] = self._choose(label)
            return self._chosen[label]

    def _choose(self, label: str) -> list[bytes]:
        folder = self.folders.get(label)
        if folder is None:
            return []
        photos = []
        for path in list_images(folder)[:self.candidates]:
            try:
                # the network sees image_size px: a 12 MP original would only cost memory
                photos.append(fit_within(load_rgb(path), 4 * self.classifier.image_size))
            except DatasetError as e:
                log.warning("reference photo skipped: %s", e)
        if not photos:
            return []
        probs = self.classifier.predict(photos)[:, self.labels.index(label)]
        best = np.argsort(-probs, kind="stable")[:self.per_class]
        out = []
        for i in best:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(fit_within(photos[i], self.max_side), cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, 85])
            if ok:
                out.append(buf.tobytes())
        return out


def open_library(reference_dir: str | None, classifier: CropClassifier) -> ReferenceLibrary | None:
    """The library, or None with one clear line saying the feature is off (and why)."""
    if not reference_dir:
        log.info("reference images: off (set reference_dir to a folder per class to show typical photos)")
        return None
    try:
        library = ReferenceLibrary(reference_dir, classifier)
    except FileNotFoundError as e:
        log.warning("reference images: off (%s)", e)
        return None
    log.info("%s", library.describe())
    return library
