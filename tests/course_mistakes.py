"""Typical mistakes of each exercise of the course (t2vlab.course): learners' wrong functions, each with what
the check must say about it (a regular expression). tests/test_course.py runs every one; each exercise needs at
least two. One section per notebook, in notebook order."""

from __future__ import annotations

import math

MISTAKES = {}  # key -> [(a learner's wrong function, what the check must say)]


# ---------------------------------------------------------------------------------- 04: attention
def attention_no_scale(q, k, v):
    return (q @ k.transpose(-2, -1)).softmax(-1) @ v


def attention_softmax_over_queries(q, k, v):
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-2) @ v


MISTAKES["04.attention"] = [(attention_no_scale, "without the 1/sqrt\\(d\\) scale"),
                            (attention_softmax_over_queries, "softmax over the queries")]
