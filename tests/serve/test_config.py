"""Limits are checked when made, naming the field and its flag; options survive the
trip through the environment to worker processes."""

import pytest

from fcnseg.errors import ConfigError
from fcnseg.serve.config import FLAGS, Limits, ServeOptions


def test_defaults_are_valid_and_every_field_has_its_flag():
    limits = Limits()
    assert limits.max_pixels <= 4096 * 4096 and limits.batch_wait_ms == 5.0
    assert set(FLAGS) == set(limits.__dataclass_fields__)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("max_batch", 0, "max_batch (--max-batch) must be a whole number >= 1, got 0"),
        ("max_queue", 2.5, "max_queue (--max-queue) must be a whole number >= 1, got 2.5"),
        ("batch_wait_ms", -0.1, "batch_wait_ms (--batch-wait-ms) must be a number >= 0"),
        ("read_timeout_s", float("inf"), "read_timeout_s (--read-timeout) must be a number"),
        ("max_pixels", True, "max_pixels (--max-pixels): expected a number, got True"),
        ("max_body_bytes", "1", "max_body_bytes (--max-body-mb): expected a number, got '1'"),
    ],
)
def test_bad_limits_name_field_and_flag(field, value, words):
    with pytest.raises(ConfigError) as err:
        Limits(**{field: value})
    assert words in str(err.value)


def test_whole_floats_become_ints_and_zero_wait_is_allowed():
    limits = Limits(max_batch=4.0, batch_wait_ms=0)
    assert type(limits.max_batch) is int and limits.max_batch == 4
    assert type(limits.batch_wait_ms) is float and limits.batch_wait_ms == 0.0


def test_options_round_trip_through_json():
    options = ServeOptions("runs/x/best.pt", "onnxruntime", "fp32", "cpu", Limits(max_batch=3),
                           normalization="imagenet-greyworld-clip")  # fmt: skip
    assert ServeOptions.from_json(options.to_json()) == options
