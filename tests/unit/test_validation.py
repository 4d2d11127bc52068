"""Every validation rule raises at the call, naming the argument and the rule."""

from __future__ import annotations

import enum
import math

import numpy as np
import pytest

from mltrail import validation as v


@pytest.mark.parametrize(("name", "error", "message"), [
    (5, TypeError, "name must be a str, got int"),
    ("", ValueError, "name must not be empty"),
    ("x" * 256, ValueError, "name must be at most 255 characters, got 256"),
    ("   ", ValueError, "must not be only whitespace"),
    ("loss\t", ValueError, "must not contain control characters"),
    ("lo\x00ss", ValueError, "must not contain control characters"),
    ("lo\nss", ValueError, "must not contain control characters"),
])
def test_bad_names_are_refused_with_the_rule(name: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")):
        v.check_name(name)


def test_good_names_pass_including_unicode_and_the_limit() -> None:
    assert v.check_name("validation/accuracy") == "validation/accuracy"
    assert v.check_name("Genauigkeit ü") == "Genauigkeit ü"
    assert v.check_name("x" * 255) == "x" * 255


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(("value", "expected"), [
    (1.5, 1.5), (3, 3), (True, True), ("text", "text"),
    (np.float32(0.5), 0.5), (np.int64(7), 7), (np.bool_(True), True), (np.float64(2.5), 2.5),
    (np.array(4.0), 4.0), (Color.RED, 1),
])
def test_values_of_the_v1_kinds_and_numpy_scalars_become_python(value: object,
                                                                 expected: object) -> None:
    got = v.check_value(value)
    assert got == expected
    assert type(got) in (bool, int, float, str)


def test_nan_is_a_valid_scalar() -> None:
    assert math.isnan(v.check_value(float("nan")))  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "error", "message"), [
    (None, TypeError, "value must be a bool, int, float or str .*got NoneType"),
    ([1], TypeError, "got list"),
    (b"x", TypeError, "got bytes"),
    (np.array([1.0, 2.0]), TypeError, "got ndarray"),
    (2**63, ValueError, "does not fit in a signed 64-bit integer"),
    ("é" * 40000, ValueError, "value must be at most 65536 bytes as UTF-8"),
])
def test_bad_values_are_refused(value: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        v.check_value(value)


def test_description_and_step_rules() -> None:
    with pytest.raises(TypeError, match="description must be a str"):
        v.check_description(3)
    with pytest.raises(ValueError, match="description must be at most 4096 characters"):
        v.check_description("d" * 4097)
    with pytest.raises(TypeError, match="step must be an int or None, got float"):
        v.check_step(1.5)
    with pytest.raises(TypeError, match="step must be an int or None, got bool"):
        v.check_step(True)
    with pytest.raises(ValueError, match="step must be between 0 and"):
        v.check_step(-1)
    assert v.check_step(np.int32(4)) == 4


def test_list_rules() -> None:
    with pytest.raises(TypeError, match="value must be a list of values, got str"):
        v.check_list("abc")
    with pytest.raises(ValueError, match="value must have at most 250000 items, got 250001"):
        v.check_list([0] * 250_001)
    with pytest.raises(TypeError, match=r"value\[1\] must be a bool, int, float or str"):
        v.check_list([1, None])
    assert v.check_list(np.arange(3)) == [0, 1, 2]


def test_table_rules() -> None:
    with pytest.raises(TypeError, match="value must be a dict of column name -> list"):
        v.check_table([1, 2])
    with pytest.raises(ValueError, match="value must have at least one column"):
        v.check_table({})
    with pytest.raises(ValueError, match="value must have at most 250000 cells, got 250002"):
        v.check_table({"a": [0] * 125_001, "b": [0] * 125_001})
    with pytest.raises(ValueError, match=r"column name .* must not be only whitespace"):
        v.check_table({" ": [1]})
    assert v.check_table({"a ": [1]})  # v1 accepted outer spaces


def test_names_v1_accepted_are_accepted() -> None:
    # Microsoft's hello_with_children.py logs this name, trailing space included
    assert v.check_name("Hello from child run ") == "Hello from child run "
    assert v.check_name(" Competition Rank") == " Competition Rank"


def test_row_rules() -> None:
    with pytest.raises(ValueError, match="log_row needs at least one column"):
        v.check_row({})
    with pytest.raises(TypeError, match="column 'x' must be a bool, int, float or str"):
        v.check_row({"x": [1]})
    with pytest.raises(ValueError, match="log_row takes at most 1000 columns"):
        v.check_row({f"c{i}": i for i in range(1001)})


def test_tag_rules() -> None:
    assert v.check_tags({"a": 1, "b": None, "c": True}) == {"a": "1", "b": "", "c": "True"}
    with pytest.raises(TypeError, match="tags must be a dict, got list"):
        v.check_tags(["a"])
    with pytest.raises(ValueError, match="tags key must not be empty"):
        v.check_tags({"": "x"})
    with pytest.raises(ValueError, match=r"tags\['a'\] must be at most 4096 characters"):
        v.check_tags({"a": "x" * 4097})


CONFUSION = {"schema_type": "confusion_matrix", "schema_version": "1.0.0",
             "data": {"class_labels": ["a", "b"], "matrix": [[1, 0], [0, 1]]}}


def test_json_metric_rules() -> None:
    version, text = v.check_json_metric(CONFUSION, "confusion_matrix")
    assert version == "1.0.0" and '"matrix":[[1,0],[0,1]]' in text
    assert v.check_json_metric('{"schema_type": "residuals", "schema_version": "v1", '
                               '"data": {}}', "residuals")[0] == "v1"
    with pytest.raises(ValueError, match=r"missing \['data'\]"):
        v.check_json_metric({"schema_type": "residuals", "schema_version": "1"}, "residuals")
    with pytest.raises(ValueError, match="value\\['schema_type'\\] must be 'residuals'"):
        v.check_json_metric(CONFUSION, "residuals")
    with pytest.raises(ValueError, match="must not contain NaN or Infinity"):
        v.check_json_metric({**CONFUSION, "data": {"matrix": [[float("nan")]]}},
                            "confusion_matrix")
    with pytest.raises(ValueError, match="must not contain NaN or Infinity"):
        v.check_json_metric('{"schema_type": "residuals", "schema_version": "1", '
                            '"data": {"x": NaN}}', "residuals")
    with pytest.raises(ValueError, match="value is not valid JSON"):
        v.check_json_metric("{", "residuals")
    with pytest.raises(TypeError, match="value must be a dict or a JSON string, got int"):
        v.check_json_metric(3, "residuals")


def test_artifact_names() -> None:
    assert v.check_artifact_name("outputs/model.pkl") == "outputs/model.pkl"
    for bad in ("/etc/passwd", "a/../b", "a//b", "./a"):
        with pytest.raises(ValueError, match="must be a relative path"):
            v.check_artifact_name(bad)


SURROGATE = "x\udc80"  # what os.fsdecode makes of a file name that is not UTF-8


def test_lone_surrogates_are_refused_at_the_call_wherever_a_string_goes() -> None:
    message = "lone surrogate '\\\\udc80' at index [12]"
    calls = [
        lambda: v.check_name(SURROGATE),
        lambda: v.check_value(SURROGATE),
        lambda: v.check_value("é" + SURROGATE),
        lambda: v.check_description(SURROGATE),
        lambda: v.check_list(["ok", SURROGATE]),
        lambda: v.check_row({SURROGATE: 1}),
        lambda: v.check_row({"x": SURROGATE}),
        lambda: v.check_table({SURROGATE: [1]}),
        lambda: v.check_tags({"a": SURROGATE}),
        lambda: v.check_tags({SURROGATE: "a"}),
        lambda: v.check_json_metric({**CONFUSION, "schema_version": SURROGATE},
                                    "confusion_matrix"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match=r"value\[1\] must be valid Unicode"):
        v.check_list(["ok", SURROGATE])
    with pytest.raises(ValueError, match="description must be valid Unicode"):
        v.check_description(SURROGATE)
    assert SURROGATE not in v._valid_names  # a refused name is not cached as checked


def test_one_call_is_bounded_in_encoded_size_not_only_per_item() -> None:
    limit = "must be at most 16 MiB per call"
    with pytest.raises(ValueError, match=f"value {limit}"):
        v.check_list(["x" * 300] * 60_000)  # 18 MB of strings, 60,000 items
    with pytest.raises(ValueError, match=f"value {limit}"):
        v.check_list(["é" * 150] * 60_000)  # 300 bytes each as UTF-8
    with pytest.raises(ValueError, match=f"log_row {limit}"):
        v.check_row({f"c{i}": "x" * 65_536 for i in range(300)})
    with pytest.raises(ValueError, match=f"value {limit}"):
        v.check_table({"a": ["x" * 1000] * 9_000, "b": ["x" * 1000] * 9_000})
    with pytest.raises(ValueError, match=f"tags {limit}"):
        v.check_tags({f"k{i}": "x" * 4096 for i in range(5000)})
    assert len(v.check_list(["x" * 200] * 60_000)) == 60_000  # 12 MB is fine
