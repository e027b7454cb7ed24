"""fgvc.deploy.outputs: the three formats, line by line, against hand-written expectations."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from fgvc.deploy.outputs import escape_controls, format_predictions, safe_cell
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


def test_controls_are_escaped_and_formulas_neutralized():
    assert escape_controls("a\nb\tc\x1b d\x85e\u2028f\u2029 café") == (
        "a\\nb\\tc\\x1b d\\x85e\\u2028f\\u2029 café"  # C0, C1, line and paragraph separators
    )
    for start in "=+-@":
        assert safe_cell(f"{start}1+1") == f"'{start}1+1"
    assert safe_cell("1+1=2") == "1+1=2" and safe_cell("\n=x") == "\\n=x"


def test_the_exact_text_of_each_format():
    """Byte for byte: JSON indented by 2 with names as they are (not \\u escapes), CSV lines
    ending in \\n, the table's names escaped onto one line."""
    predictions = [Prediction("/d/é.jpg", [(1, "café\n=x", 0.5)])]
    assert format_predictions("json", predictions, [], {"tta": False}) == (
        "{\n"
        '  "tta": false,\n'
        '  "predictions": [\n'
        "    {\n"
        '      "image": "/d/é.jpg",\n'
        '      "top": [\n'
        "        {\n"
        '          "rank": 1,\n'
        '          "class_index": 1,\n'
        '          "class_name": "café\\n=x",\n'
        '          "probability": 0.5\n'
        "        }\n"
        "      ]\n"
        "    }\n"
        "  ],\n"
        '  "errors": []\n'
        "}\n"
    )
    assert format_predictions("csv", predictions, [], {}) == (
        "image,rank,class_index,class_name,probability\n/d/é.jpg,1,1,café\\n=x,0.5\n"
    )
    assert format_predictions("table", predictions, [], {}) == (
        "/d/é.jpg\n   1   0.5000  café\\n=x\n"
    )
