"""fgvc.deploy.outputs: the three formats, line by line, against hand-written expectations."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from fgvc.deploy.outputs import format_predictions
from fgvc.deploy.predict import Prediction

# two images, ranks in the order predict gives them (highest probability first); the
# second image's top class has a name a spreadsheet would run as a formula
PREDICTIONS = [
    Prediction("/data/b.jpg", [(2, "Laysan Albatross", 0.75), (0, "Sooty, Albatross", 0.125)]),
    Prediction("/data/a.jpg", [(1, "=cmd", 0.5), (2, "Laysan Albatross", 0.25)]),
]


def test_the_table_lists_each_image_then_its_ranks_in_order():
    assert format_predictions("table", PREDICTIONS, [], {}) == (
        "/data/b.jpg\n"
        "   1   0.7500  Laysan Albatross\n"
        "   2   0.1250  Sooty, Albatross\n"
        "/data/a.jpg\n"
        "   1   0.5000  '=cmd\n"
        "   2   0.2500  Laysan Albatross\n"
    )
    assert format_predictions("table", [], [], {}) == ""


def test_csv_and_json_keep_the_same_order():
    rows = list(csv.reader(io.StringIO(format_predictions("csv", PREDICTIONS, [], {}))))
    assert rows == [
        ["image", "rank", "class_index", "class_name", "probability"],
        ["/data/b.jpg", "1", "2", "Laysan Albatross", "0.75"],
        ["/data/b.jpg", "2", "0", "Sooty, Albatross", "0.125"],
        ["/data/a.jpg", "1", "1", "'=cmd", "0.5"],
        ["/data/a.jpg", "2", "2", "Laysan Albatross", "0.25"],
    ]
    errors = [(Path("/data/c.jpg"), "/data/c.jpg: cannot decode image")]
    document = json.loads(format_predictions("json", PREDICTIONS, errors, {"topk": 2}))
    assert document["topk"] == 2
    assert [p["image"] for p in document["predictions"]] == ["/data/b.jpg", "/data/a.jpg"]
    assert document["predictions"][1]["top"] == [
        {"rank": 1, "class_index": 1, "class_name": "=cmd", "probability": 0.5},
        {"rank": 2, "class_index": 2, "class_name": "Laysan Albatross", "probability": 0.25},
    ]
    assert document["errors"] == [
        {"image": "/data/c.jpg", "error": "/data/c.jpg: cannot decode image"}
    ]
