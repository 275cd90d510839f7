"""One vocabulary for checking arguments, used by every module of the package.

Each function checks one kind of value, returns it (as a plain ``int``/``float`` where that helps), and
otherwise raises an error that names the argument and shows what it got:

    positive_int("num_frames", 0)          ValueError: num_frames must be a positive integer, got 0
    number("strength", 1.5, low=0, high=1, low_open=True)
                                           ValueError: strength must be a number in (0, 1], got 1.5
    one_of("method", "box", ("ideal", "gaussian"))
                                           ValueError: method must be one of ('ideal', 'gaussian'), got 'box'
    integer("height", 60, low=8, multiple_of=8)
                                           ValueError: height must be a positive integer divisible by 8, got 60

On the command line each check is an argparse ``type`` through :func:`cli` (``type=cli(positive_int)``):
``--steps 0`` is refused by argparse, naming the flag, instead of silently becoming a default.

``True`` and ``False`` are never numbers here (Python counts them as 0 and 1, users never mean that),
NaN and infinity are never numbers, and NumPy scalars count as the Python numbers they stand for.
``error`` picks the exception class (e.g. a module's own ``ValueError`` subclass); ``hint`` is appended
to the message (say what the value means, or what to do).
"""

from __future__ import annotations

import argparse
import math
import numbers

import torch

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes seeds in [0, 2^64)


def _fail(error, name, wanted, v, hint):
    raise error(f"{name} must be {wanted}, got {v!r:.80}{hint}")


def _range_words(low, high, low_open=False, high_open=False, kind="a number"):
    """'a number in (0, 1]', 'an integer >= 0', 'a finite number > 0', ..."""
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high}"
    return kind


def is_integer(v) -> bool:
    """An int (NumPy's too), never a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v) -> bool:
    """A finite real number (int or float, NumPy's too), never a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def integer(name, v, *, low=None, high=None, multiple_of=None, error=ValueError, hint="") -> int:
    """An integer in [low, high] (either bound optional); with ``multiple_of``, also a multiple of it (sizes
    that a model halves several times: pixels, tiles)."""
    if (not is_integer(v) or (low is not None and v < low) or (high is not None and v > high)
            or (multiple_of is not None and v % multiple_of)):
        if multiple_of is None:
            wanted = _range_words(low, high, kind="an integer")
        elif high is None and low is not None and 0 < low <= multiple_of:  # the same as any low in (0, step]
            wanted = f"a positive integer divisible by {multiple_of}"
        else:
            wanted = _range_words(low, high, kind=f"an integer divisible by {multiple_of}")
        _fail(error, name, wanted, v, hint)
    return int(v)


def positive_int(name, v, *, high=None, error=ValueError, hint="") -> int:
    """An integer >= 1 (and <= ``high``)."""
    if not is_integer(v) or v < 1 or (high is not None and v > high):
        wanted = "a positive integer" if high is None else f"an integer in [1, {high}]"
        _fail(error, name, wanted, v, hint)
    return int(v)


def number(name, v, *, low=None, high=None, low_open=False, high_open=False, error=ValueError, hint="") -> float:
    """A finite number within the bounds given (closed unless ``low_open``/``high_open``)."""
    ok = is_number(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        _fail(error, name, _range_words(low, high, low_open, high_open, "a finite number"
                                        if low is None or high is None else "a number"), v, hint)
    return float(v)


def one_of(name, v, choices, *, error=ValueError, hint=""):
    """One of ``choices`` (compared as values; never an array compared element-wise)."""
    try:
        ok = isinstance(v, (str, int, float, type(None))) and v in choices
    except TypeError:
        ok = False
    if not ok:
        _fail(error, name, f"one of {tuple(choices)}", v, hint)
    return v


def boolean(name, v, *, error=ValueError, hint="") -> bool:
    """True or False (not 0/1, not a string)."""
    if not isinstance(v, bool):
        _fail(error, name, "True or False", v, hint)
    return v


def callable_or_none(name, v, *, error=ValueError, hint=""):
    if v is not None and not callable(v):
        _fail(error, name, "callable (or None)", v, hint)
    return v


def float_dtype(name, v, *, error=ValueError, hint=""):
    """A floating-point ``torch.dtype`` (float32, float16, bfloat16, float8_e4m3fn, ...)."""
    if not isinstance(v, torch.dtype) or not v.is_floating_point:
        _fail(error, name, "a floating-point torch.dtype (e.g. torch.float16)", v, hint)
    return v


def seed(name, v, *, error=ValueError, hint="") -> int:
    """A seed for ``torch.Generator().manual_seed``: an integer in [0, 2^64 - 1]."""
    return integer(name, v, low=0, high=MAX_SEED, error=error, hint=hint)


def cli(check, convert=int, **bounds):
    """``check`` (one of the above) as an argparse ``type``: the text converted with ``convert`` (int, float),
    then checked with ``bounds``; a refusal is argparse's error, which names the flag and exits with status 2."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if convert is int else 'a number'}, "
                                             f"got {text!r}") from None
        try:
            return check("it", value, **bounds)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("it ")) from None

    parse.__name__ = check.__name__  # argparse says "invalid positive_int value" if the message is empty
    return parse
