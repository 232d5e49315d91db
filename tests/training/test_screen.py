import json

from mpox_aism.cli import main as cli


def test_screen_two_archs(tiny_skin8, tmp_path):
    out = tmp_path / "screen"
    assert cli(["screen", "--data", str(tiny_skin8), "--archs", "mobilenet_v2,efficientnet_b0", "--epochs", "1",
                "--image-size", "32", "--batch-size", "8", "--workers", "0", "--out", str(out)]) == 0
    report = json.loads((out / "screen.json").read_text())
    assert [r["arch"] for r in report["results"]] == ["mobilenet_v2", "efficientnet_b0"]
    for r in report["results"]:
        assert 0 <= r["macro_f1"] <= 1 and r["params_m"] > 1 and r["ms_per_image"] > 0
    assert "32 px" in report["recipe"]
    assert (out / "curves.png").is_file() and (out / "screen.md").is_file()
    assert (out / "mobilenet_v2" / "model.pt").is_file()
