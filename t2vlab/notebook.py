"""Helpers for the notebooks: the first cell's ``setup()``, showing the package's own source, and
the few pictures several notebooks draw (images, frame grids) and the memory they measure.

Nothing here is part of the model; it keeps the notebooks short and free of copy-pasted code.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import inspect
import os
import re
import sys

import torch
import torch.nn.functional as F

from .original import is_original
from .pipeline import TextToVideoPipeline
from .weights import KNOWN_CHECKPOINTS, REAL_CHECKPOINT, embedded_name, recommended_settings

# Where a notebook installs t2vlab from when it is missing (a fresh Colab): the one place that names it. Each
# notebook's first cell carries a copy (it runs before t2vlab can be imported); tests/test_notebooks_helpers.py
# holds every copy to INSTALL_CELL.
INSTALL_SOURCE = "t2vlab @ git+https://github.com/t2vlab/t2vlab"
INSTALL_CELL = f"""\
# Install t2vlab where it is missing (a fresh Colab); in a clone of the repository, use the clone's copy.
import importlib.util, os, subprocess, sys
INSTALL_SOURCE = {INSTALL_SOURCE!r}  # t2vlab.notebook.INSTALL_SOURCE
if importlib.util.find_spec("t2vlab") is None:
    if os.path.isfile(os.path.join("..", "t2vlab", "__init__.py")):  # run from notebooks/ of a clone
        sys.path.insert(0, os.path.abspath(".."))
    else:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", INSTALL_SOURCE], check=True)
"""
TINY_CHECKPOINT = "tiny"
TOY_CHECKPOINT = "toy"
CHECKPOINT_ENV = "T2VLAB_CHECKPOINT"


def on_colab() -> bool:
    """True inside Google Colab (its kernel imports ``google.colab`` and sets ``COLAB_RELEASE_TAG``)."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


@dataclasses.dataclass
class Setup:
    """What the first cell of a notebook decided: where to run, in which precision, on which weights."""

    device: str
    dtype: torch.dtype
    checkpoint: str
    description: str

    def __str__(self):
        dtype = str(self.dtype).removeprefix("torch.")
        return (f"device: {self.device}   dtype: {dtype}   checkpoint: {self.checkpoint}\n"
                f"  {self.description}")


def describe_checkpoint(checkpoint: str) -> str:
    """A plain-words description of a checkpoint name or path."""
    if embedded_name(checkpoint) or checkpoint in KNOWN_CHECKPOINTS:
        return recommended_settings(checkpoint).description
    if os.path.isdir(checkpoint):
        if is_original(checkpoint):
            return recommended_settings(checkpoint).description
        return f"a checkpoint folder on this machine ({checkpoint}), in the published layout."
    return f"{checkpoint!r}, a checkpoint on the Hugging Face Hub, downloaded on first use."


def choose_checkpoint(cuda: bool, environ=None) -> str:
    """``$T2VLAB_CHECKPOINT`` if set, else the real model with a GPU and the trained toy one without."""
    environ = os.environ if environ is None else environ
    chosen = environ.get(CHECKPOINT_ENV, "").strip()
    if chosen:
        return chosen
    return REAL_CHECKPOINT if cuda else TOY_CHECKPOINT


def setup(seed: int | None = 0, quiet: bool = False) -> Setup:
    """Pick device, dtype and checkpoint for this machine, seed torch, print the choice, return it."""
    cuda = torch.cuda.is_available()
    checkpoint = choose_checkpoint(cuda)
    env = Setup(device="cuda" if cuda else "cpu", dtype=torch.float16 if cuda else torch.float32,
                checkpoint=checkpoint, description=describe_checkpoint(checkpoint))
    if seed is not None:
        torch.manual_seed(seed)
    if not quiet:
        print(env)
    return env


def load_pipeline(checkpoint=None) -> TextToVideoPipeline:
    """The pipeline a notebook runs, on this machine's device: ``checkpoint``, else ``$T2VLAB_CHECKPOINT``,
    else the real model with a GPU and the trained toy one without; float16 on a GPU (the fp16 files
    where the checkpoint has them), float32 on the CPU. ``pipe.recommended`` holds its settings."""
    cuda = torch.cuda.is_available()
    return TextToVideoPipeline.from_pretrained(checkpoint or choose_checkpoint(cuda),
                                               torch_dtype=torch.float16 if cuda else torch.float32,
                                               variant="fp16" if cuda else None, device="cuda" if cuda else None)


# ------------------------------------------------------------------------------------ showing code
def _in_ipython() -> bool:
    ipython = sys.modules.get("IPython")
    return ipython is not None and ipython.get_ipython() is not None


def source_of(obj) -> tuple[str, str]:
    """(``file:line`` relative to the package, source text) of a function, class or method."""
    src = inspect.getsource(obj)
    try:
        file = inspect.getsourcefile(obj) or "?"
        line = inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        file, line = "?", 0
    parts = re.split(r"[\\/]", file)
    if "t2vlab" in parts:
        file = "/".join(parts[len(parts) - 1 - parts[::-1].index("t2vlab"):])
    return f"{file}:{line}", src


def show_source(obj) -> None:
    """Display the source of a package function or class, as the package has it (not a copy)."""
    where, src = source_of(obj)
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
    if _in_ipython():
        from IPython.display import Markdown, display  # only inside a notebook
        display(Markdown(f"`{name}` from `{where}`\n\n```python\n{src.rstrip()}\n```"))
    else:
        print(f"# {name} from {where}\n{src}")


# ------------------------------------------------------------------------------------ pictures
def sample_image(size: int = 256) -> torch.Tensor:
    """A real photograph that ships with matplotlib (Grace Hopper), centre-cropped to a square and
    resized: (3, size, size), float32 in [-1, 1] (the range the VAE and the diffusion model use)."""
    import matplotlib.cbook  # imported here: matplotlib is slow to import, and only the pictures need it
    import matplotlib.image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        img = torch.from_numpy(matplotlib.image.imread(f, format="jpg").copy())
    img = img.permute(2, 0, 1).float() / 255.0  # (3, H, W) in [0, 1]
    h, w = img.shape[-2:]
    s = min(h, w)
    img = img[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    img = F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return (img * 2 - 1).clamp(-1, 1)


def to_image(x):
    """A tensor (3, H, W) in [-1, 1], or (H, W, 3) in [0, 1], or (H, W) -> a numpy array imshow can draw."""
    x = x.detach().float().cpu()
    if x.ndim == 3 and x.shape[0] in (1, 3) and x.shape[-1] not in (1, 3):
        x = (x.permute(1, 2, 0) / 2 + 0.5)
    return x.clamp(0, 1).squeeze(-1).numpy() if x.ndim == 3 else x.numpy()


def show_images(images, titles=None, ncols=None, size=2.2, cmap=None, suptitle=None):
    """Draw a list of images (anything ``to_image`` takes) in a grid; returns the figure."""
    import matplotlib.pyplot as plt  # imported here: slow to import, and only the pictures need it

    images = list(images)
    n = len(images)
    ncols = ncols or n
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = to_image(images[i]) if isinstance(images[i], torch.Tensor) else images[i]
            ax.imshow(img, cmap=cmap if getattr(img, "ndim", 3) == 2 else None)
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_frames(frames, ncols=8, size=1.6, title=None):
    """Draw video frames (F, H, W, 3) in [0, 1] (what ``decode_video`` returns for one video), or
    (C, F, H, W) in [-1, 1], one tile per frame with its index; returns the figure."""
    if frames.ndim == 4 and frames.shape[0] in (1, 3) and frames.shape[-1] not in (1, 3):
        frames = frames.permute(1, 0, 2, 3)  # (F, C, H, W)
    return show_images(list(frames), titles=[f"frame {i}" for i in range(len(frames))],
                       ncols=min(ncols, len(frames)), size=size, suptitle=title)


# ------------------------------------------------------------------------------------ measuring
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def _release_free_memory():
    """Make the resident-set high-water mark reflect what a call allocates (Linux, glibc): allocations
    over 1 MiB get their own mapping, returned to the OS when freed, and free heap pages are released
    now, so that memory the call reuses has to become resident again and is counted."""
    libc = ctypes.CDLL("libc.so.6")
    M_MMAP_THRESHOLD = -3
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    gc.collect()
    libc.malloc_trim(0)


def peak_memory(fn, device="cpu"):
    """Extra peak memory in bytes that ``fn()`` needs, or None where it cannot be measured.

    CUDA: ``torch.cuda.max_memory_allocated`` around the call. CPU (Linux): the process's resident
    high-water mark (VmHWM), reset just before the call, minus the resident memory at that moment.
    """
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    try:
        _release_free_memory()
        before = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
    except (OSError, AttributeError, TypeError):
        fn()
        return None
    fn()
    return max(_status_kib("VmHWM") - before, 0) * 1024


def film_strip(frames, gap: int = 2, fill: float = 1.0):
    """Frames (F, H, W, 3) or (F, H, W) in [0, 1] (a tensor or an array) -> one numpy image (H, F*(W+gap)-gap, ...)
    with the frames side by side and ``gap`` columns of ``fill`` between them: one ``imshow`` per video,
    much faster to draw than one axis per frame. Frame f's centre is at x = f * (W + gap) + (W - 1) / 2."""
    frames = torch.as_tensor(frames).detach().float().cpu()
    channels_last = frames.movedim(2, -1) if frames.ndim == 4 else frames        # (F, H, [3,] W): width last
    padded = F.pad(channels_last, (0, gap), value=fill)                          # (F, H, [3,] W+gap)
    strip = torch.cat(list(padded), dim=-1)[..., :padded.shape[-1] * len(frames) - gap]
    return (strip.movedim(-1, 1) if frames.ndim == 4 else strip).numpy()


def video_rows(videos, labels, size=1.2, title=None):
    """Draw videos one per row, every frame a tile: ``videos`` a list of (F, H, W, 3) in [0, 1], ``labels``
    one text per row (written above its first frame); returns the figure. For experiment grids."""
    import matplotlib.pyplot as plt  # imported here: slow to import, and only the pictures need it

    frames = max(len(v) for v in videos)
    height = (size + 0.25) * len(videos) + (0.35 if title else 0.05)  # inches: a label above every row
    fig, axes = plt.subplots(len(videos), frames, figsize=(size * frames, height), squeeze=False,
                             gridspec_kw=dict(wspace=0.03, hspace=0.25 / size, left=0.005, right=0.995, bottom=0.005,
                                              top=1 - (0.3 + (0.3 if title else 0)) / height))
    for row, (video, label) in enumerate(zip(videos, labels)):
        for f, ax in enumerate(axes[row]):
            ax.axis("off")
            if f < len(video):
                ax.imshow(to_image(torch.as_tensor(video[f])))
        axes[row, 0].set_title(label, loc="left", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.05 / height, va="top")
    return fig
