"""Notebook 12's exercises: FreeNoise's windows over the frames, their weights, and the fused result (Eq. 4)."""

from __future__ import annotations

import torch

from ..techniques.free_noise import FreeNoise, attend_in_windows, window_weights
from .core import Exercise, ExerciseMistake, call, compare, generator, register


def window_spans(num_frames, context_length, context_stride):
    """[(start, end)] of FreeNoise's windows: a window of ``context_length`` frames every ``context_stride``
    frames, and one more ending at the last frame when the strided ones stop short of it."""
    length = min(context_length, num_frames)
    spans = [(s, s + length) for s in range(0, num_frames - length + 1, context_stride)]
    if spans[-1][1] < num_frames:
        spans.append((num_frames - length, num_frames))
    return spans


def check_window_spans(fn):
    for frames, length, stride in ((24, 16, 4), (32, 8, 4), (30, 8, 4), (8, 16, 4), (20, 8, 8)):
        want = FreeNoise(context_length=length, context_stride=stride).spans(frames)
        got = call(fn, frames, length, stride)
        what = f"window_spans({frames}, {length}, {stride})"
        if got is None:
            raise ExerciseMistake(f"{what} is None: the function returns nothing (a missing `return`?)")
        got = [tuple(int(v) for v in span) for span in got]
        if got == want:
            continue
        if got == want[:-1] and want[-1][1] == frames:
            raise ExerciseMistake(f"{what} misses the window ending at the last frame: {want[-1]} (frames "
                                  f"{got[-1][1] if got else 0}..{frames - 1} are in no window)")
        if any(b > frames for _, b in got):
            raise ExerciseMistake(f"{what} has a window past the last frame: {got}")
        if frames < length and got != want:
            raise ExerciseMistake(f"{what}: with fewer frames than context_length the one window is all of them, "
                                  f"{want}; got {got}")
        raise ExerciseMistake(f"{what} is {got}, expected {want}")


def pyramid_weights(length):
    """The pyramid weights of a window of ``length`` frames: 1, 2, ... up to the middle and back down to 1
    (length 5: [1, 2, 3, 2, 1]; length 4: [1, 2, 2, 1]). A float tensor (length,)."""
    return torch.tensor([float(min(i + 1, length - i)) for i in range(length)])


def check_pyramid_weights(fn):
    for length in (5, 8):
        want = torch.tensor(window_weights(length, "pyramid"))
        got = call(fn, length)
        got = torch.as_tensor(got, dtype=torch.float32) if isinstance(got, (list, tuple)) else got
        i = torch.arange(length, dtype=torch.float32)
        compare(got, want, f"pyramid_weights({length})", mistakes={
            "counting from 0 (min(i, length - 1 - i)): the window's first and last frames then weigh 0, and a frame "
            "at the video's start or end would be divided by 0": torch.minimum(i, length - 1 - i),
            "a ramp up to the end (i + 1): the pyramid comes back down after the middle": i + 1,
            "flat weights (all 1): the pyramid counts a window most at its centre": torch.ones(length),
        })


def fuse_windows(outputs, spans, weights, num_frames):
    """FreeNoise's Eq. 4. ``outputs[k]`` (N, L, C) is what window k = ``spans[k]`` = (start, end) gave its L frames,
    ``weights`` (L,) the weight of each position in a window -> (N, num_frames, C): each frame's weighted mean
    over the windows that hold it, sum_k w_k,f out_k,f / sum_k w_k,f."""
    n, _, c = outputs[0].shape
    total = torch.zeros(n, num_frames, c)
    weight_sum = torch.zeros(num_frames)
    for out, (start, end) in zip(outputs, spans):
        total[:, start:end] += out * weights[:, None]
        weight_sum[start:end] += weights
    return total / weight_sum[:, None]


class _Window:
    """A stand-in for a transformer block: ``attend`` gives each window its own numbers (what the package's fusion
    receives), ``feed_forward`` is the identity, so ``attend_in_windows`` returns the fused result itself."""

    def __init__(self, outputs):
        self.outputs, self.k = outputs, 0

    def attend(self, tokens):
        out = self.outputs[self.k]
        self.k += 1
        return out

    def feed_forward(self, x):
        return x


def check_fuse_windows(fn):
    settings = FreeNoise(context_length=8, context_stride=4)
    frames = 22
    spans = settings.spans(frames)  # (0, 8), (4, 12), (8, 16), (12, 20), (14, 22)
    g = generator(14)
    outputs = [torch.randn(3, 8, 5, generator=g) for _ in spans]
    weights = torch.tensor(window_weights(8, "pyramid"))
    want = attend_in_windows(_Window(outputs), torch.zeros(3, frames, 5), settings)
    total, count, weight_sum = torch.zeros(3, frames, 5), torch.zeros(frames), torch.zeros(frames)
    for out, (a, b) in zip(outputs, spans):
        total[:, a:b] += out * weights[:, None]
        count[a:b] += 1
        weight_sum[a:b] += weights
    plain = torch.zeros(3, frames, 5)
    for out, (a, b) in zip(outputs, spans):
        plain[:, a:b] += out
    compare(call(fn, outputs, spans, weights, frames), want, "fuse_windows(outputs, spans, weights, 22)", mistakes={
        "without dividing by the sum of the weights (a frame in more windows gets a larger result)": total,
        "dividing by the number of windows instead of the sum of their weights": total / count[:, None],
        "with every window weighing the same (a plain mean over the windows)": plain / count[:, None],
    })


register(Exercise("12.windows", "FreeNoise's windows", "window_spans", check_window_spans, window_spans,
                  hint="range(0, num_frames - length + 1, stride) starts; then one more window if the last "
                       "one ends before num_frames"))
register(Exercise("12.weights", "the pyramid weights", "pyramid_weights", check_pyramid_weights, pyramid_weights,
                  hint="position i of L counts min(i + 1, L - i)"))
register(Exercise("12.fuse", "fusing the windows (Eq. 4)", "fuse_windows", check_fuse_windows, fuse_windows,
                  hint="add weights * output into each window's frames, add the weights into a per-frame sum, "
                       "divide at the end"))
