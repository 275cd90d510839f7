"""The one fold of a video's frames into the batch (t2vlab.frames), frame index fastest."""

from __future__ import annotations

import torch

from t2vlab import batch_to_frames, frames_to_batch


def test_frames_fold_into_the_batch_frame_index_fastest():
    video = torch.arange(2 * 3 * 4 * 1 * 1.0).reshape(2, 3, 4, 1, 1)  # (B, C, F, H, W)
    images = frames_to_batch(video)
    assert images.shape == (8, 3, 1, 1)
    torch.testing.assert_close(images[5], video[1, :, 1])  # video 1, frame 1
    torch.testing.assert_close(batch_to_frames(images, 4), video)


