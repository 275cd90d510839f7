"""The argument vocabulary (t2vlab.checks): what each check lets through, and the message it gives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from t2vlab import checks


@pytest.mark.parametrize("v", [1, 7, np.int64(3)])
def test_positive_int_takes_integers_from_one(v):
    assert checks.positive_int("n", v) == int(v) and type(checks.positive_int("n", v)) is int


@pytest.mark.parametrize("v", [0, -1, True, 2.0, "3", None, np.float32(2)])
def test_positive_int_refuses_the_rest_naming_the_argument(v):
    with pytest.raises(ValueError, match=r"^num_frames must be a positive integer, got "):
        checks.positive_int("num_frames", v)


def test_bounds_are_said_in_the_message():
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 4\], got 5"):
        checks.positive_int("n", 5, high=4)
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0, got -1"):
        checks.integer("seed", -1, low=0)
    with pytest.raises(ValueError, match=r"s must be a number in \(0, 1\], got 0"):
        checks.number("s", 0, low=0, high=1, low_open=True)
    with pytest.raises(ValueError, match=r"g must be a finite number >= 0, got -0.5 \(0: off\)"):
        checks.number("g", -0.5, low=0, hint=" (0: off)")
    assert checks.number("s", 1, low=0, high=1, low_open=True) == 1.0


def test_multiple_of_takes_integers_divisible_by_the_step():
    assert checks.integer("height", 64, low=8, multiple_of=8) == 64
    message = r"^height must be a positive integer divisible by 8, got 60 \(the VAE's downsampling\)$"
    with pytest.raises(ValueError, match=message):
        checks.integer("height", 60, low=8, multiple_of=8, hint=" (the VAE's downsampling)")
    for bad in (0, 64.0, True):  # below the bound; a float; a bool (True % 1 == 0)
        with pytest.raises(ValueError, match="divisible by"):
            checks.integer("tile", bad, low=1, multiple_of=1 if bad is True else 8)
    with pytest.raises(ValueError, match=r"overlap must be an integer divisible by 8 in \[0, 24\], got 32"):
        checks.integer("overlap", 32, low=0, high=24, multiple_of=8)


@pytest.mark.parametrize("v", [math.nan, math.inf, -math.inf, True, "1", None])
def test_a_number_is_finite_and_not_a_bool(v):
    with pytest.raises(ValueError, match="x must be a finite number"):
        checks.number("x", v)


def test_one_of_boolean_and_callable():
    assert checks.one_of("m", "a", ("a", "b")) == "a"
    for bad in ("c", np.array(["a", "b"]), ["a"]):
        with pytest.raises(ValueError, match=r"m must be one of \('a', 'b'\)"):
            checks.one_of("m", bad, ("a", "b"))
    assert checks.boolean("f", False) is False
    with pytest.raises(ValueError, match="f must be True or False, got 1"):
        checks.boolean("f", 1)
    with pytest.raises(ValueError, match="cb must be callable"):
        checks.callable_or_none("cb", 3)


def test_the_error_class_can_be_chosen():
    class Mine(ValueError):
        pass

    with pytest.raises(Mine):
        checks.positive_int("rank", 0, error=Mine)


def test_float_dtype_takes_floating_torch_dtypes_only():
    for ok in (torch.float32, torch.bfloat16, torch.float8_e4m3fn):
        assert checks.float_dtype("storage_dtype", ok) is ok
    for bad in (torch.int8, torch.bool, "float16", None, float):
        with pytest.raises(ValueError, match="^storage_dtype must be a floating-point torch.dtype"):
            checks.float_dtype("storage_dtype", bad)
