"""``mpox_aism.training.closeups``: close-up patches of healthy skin, cut where the skin is and named by their photo."""

import csv

import cv2
import numpy as np
import pytest

from mpox_aism.contracts.skin import skin_mask
from research.closeups import PatchRule, cut_folder, skin_patches

SKIN = (224, 172, 140)  # an RGB skin tone inside the crop stage's YCrCb rule
BLUE = (30, 60, 200)


def _half_skin(h: int = 200, w: int = 300) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = BLUE
    img[:, : w // 2] = SKIN
    return img


def test_patches_are_cut_where_the_skin_is_and_do_not_overlap():
    assert skin_mask(np.full((4, 4, 3), SKIN, np.uint8)).all()
    assert not skin_mask(np.full((4, 4, 3), BLUE, np.uint8)).any()
    patches = skin_patches(_half_skin(), PatchRule(frac=0.4, most=2))
    assert len(patches) == 2
    for p in patches:
        x0, y0, x1, y1 = p.box
        assert x1 <= 150 and x1 - x0 == y1 - y0 == 80 and p.skin == 1.0 and p.image.shape == (80, 80, 3)
    (a, b) = (p.box for p in patches)
    assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_no_patch_where_skin_is_short_or_the_image_small():
    assert skin_patches(np.full((200, 200, 3), BLUE, np.uint8)) == []
    assert skin_patches(_half_skin(40, 60), PatchRule(min_side=32)) == []  # side 16 px


def test_cut_folder_keeps_normal_images_only_in_their_photos_groups(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    rows = []
    for label in ("normal", "mpox"):
        (src / label).mkdir(parents=True)
        for i in range(2):
            name = f"{label}/{label}{i}.png"
            cv2.imwrite(str(src / name), cv2.cvtColor(_half_skin(), cv2.COLOR_RGB2BGR))
            rows.append({"path": name, "label": label, "group": f"{label}-g{i}"})
    with (src / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "group"])
        w.writeheader()
        w.writerows(rows)
    assert cut_folder(src, out, PatchRule(most=2)) == 4
    with (out / "manifest.csv").open() as f:
        written = list(csv.DictReader(f))
    assert {r["label"] for r in written} == {"normal"} and {r["source"] for r in written} == {"closeup"}
    assert sorted({(r["parent"], r["group"]) for r in written}) == [("normal/normal0.png", "normal-g0"),
                                                                    ("normal/normal1.png", "normal-g1")]
    assert all((out / r["path"]).is_file() for r in written)


def test_a_rule_out_of_range_is_refused():
    for bad in ({"frac": 1.5}, {"frac": 0}, {"min_skin": 2}, {"min_side": 0}, {"most": -1}):
        with pytest.raises(ValueError, match="patch rule out of range"):
            PatchRule(**bad)


def test_two_photos_with_one_file_stem_are_refused(tmp_path):
    """Patches are named by their photo's stem: two photos of one stem would share one patch file."""
    src = tmp_path / "src"
    for sub in ("a", "b"):
        (src / "normal" / sub).mkdir(parents=True)
        cv2.imwrite(str(src / "normal" / sub / "x.png"), cv2.cvtColor(_half_skin(), cv2.COLOR_RGB2BGR))
    (src / "manifest.csv").write_text("path,label,group\nnormal/a/x.png,normal,ga\nnormal/b/x.png,normal,gb\n")
    with pytest.raises(ValueError, match="share a file stem"):
        cut_folder(src, tmp_path / "out")
