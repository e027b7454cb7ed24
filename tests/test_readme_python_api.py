"""The README's Python API example runs as printed: a fine-tune in Python that ends as
`fgvc fit` ends (export, Grad-CAM, summary), then predict and explain with fgvc.load. Only
its three assignments of data and settings are replaced, by a tiny network and folder."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
#: The example's lines that name the reader's data and settings, and what the test runs.
SUBSTITUTES = {
    'root, photos = "data/my_birds", ["bird.jpg", "another_bird.jpg"]': (
        'root, photos = "birds", ["photo1.png", "photo2.jpg"]'
    ),
    'net = dict(arch="resnet50", pretrained="isqrt-imagenet")': (
        'net = dict(arch="resnet18", pretrained=None, reduce_dim=8, head={"iterations": 3})'
    ),
    "image_size, epochs = 448, 30": "image_size, epochs = 32, 1",
}


def readme_example() -> str:
    """The first ``python`` block of the README's "Python API" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block in the README's Python API section"
    return match.group(1)


def write_folders(root: Path) -> None:
    """Three classes told apart by colour, 4 training and 2 validation images each."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for c, name in enumerate(["red", "green", "blue"]):
            for i in range(count):
                pixels = rng.integers(0, 60, (36, 40, 3), dtype=np.uint8)
                pixels[..., c] += 180
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = readme_example()
    for line, replacement in SUBSTITUTES.items():
        assert line in code, f"the README example no longer has: {line}"
        code = code.replace(line, replacement)
    write_folders(tmp_path / "birds")
    Image.open(tmp_path / "birds" / "val" / "red" / "0.png").save("photo1.png")
    Image.open(tmp_path / "birds" / "val" / "blue" / "0.png").save("photo2.jpg", quality=95)

    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)  # noqa: S102

    out = capsys.readouterr().out
    run = tmp_path / "runs" / "my_birds" / "version_0"
    finish = namespace["finish"].outputs
    # the fit ended as `fgvc fit` ends: its export, Grad-CAM and summary, in the run folder
    assert finish.run_dir == run and finish.export == run / "export"
    assert (run / "export" / "model.onnx").is_file() and (run / "explain").is_dir()
    assert finish.best_checkpoint.parent == run / "checkpoints"
    assert finish.summary in out and "fgvc fit finished" in finish.summary
    assert "export (safetensors, ONNX, model.json): runs/my_birds/version_0/export" in out
    # printed: each photo and its most probable class, a name the data gave
    lines = [line for line in out.splitlines() if line.startswith("photo")]
    assert [line.split()[0] for line in lines] == ["photo1.png", "photo2.jpg"]
    assert all(any(f"('{c}'," in line for c in ("red", "green", "blue")) for line in lines)
    # the classifier is the run's best checkpoint, whichever way it is loaded
    import fgvc

    top = namespace["classifier"].predict(["photo1.png"], top_k=3)[0]
    again = fgvc.load(run).predict(["photo1.png"], top_k=3)[0]
    assert top.names == again.names
    np.testing.assert_allclose(top.probabilities, again.probabilities, atol=1e-6)
    # explain: maps returned and written
    assert namespace["heat"].shape == (32, 32) and namespace["overlay"].shape == (32, 32, 3)
    written = sorted(p.name for p in (tmp_path / "explain-my_birds").iterdir())
    assert written == ["001-photo1.png", "002-photo2.png", "contact_sheet.png", "explanations.json"]
