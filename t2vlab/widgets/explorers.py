"""Three explorers, each a slider or two over a picture made by a plain function of this package
(``denoising``, ``schedule``, ``attention``):

* ``DenoisingScrubber``: step through a finished run, seeing the model's guess of the clean video
  (x0, decoded) and the latents at each step;
* ``ScheduleExplorer``: how much of a picture is left at timestep t, the alpha-bar and SNR curves, and
  which timesteps each sampler visits;
* ``AttentionExplorer``: where each prompt token is looked at in a frame (cross-attention), and how the
  frames look at each other at one pixel (temporal attention).

Every explorer has ``.widget`` (display it, or display the explorer itself) and ``.image`` (the PNG shown).
"""

from __future__ import annotations

import html

import ipywidgets as w
from IPython.display import display

from ..notebook import load_pipeline
from ..schedulers import SCHEDULER_NAMES, from_name
from .attention import attention_figure, record_attention
from .denoising import decode_prediction, scrubber_figure
from .figures import figure_png, sample_picture
from .generation import error_html
from .schedule import default_scheduler_config, schedule_figure, timesteps_for

LABEL = {"description_width": "90px"}
SMALL_WORDS = {"a", "an", "the", "of", "on", "in", "at", "with", "and", "to", "is", "by", ","}


def first_word(tokens):
    """Index of the first token worth looking at: not a start/end token, not a small word like 'a'."""
    inner = range(1, len(tokens) - 1)
    return next((i for i in inner if tokens[i].lower() not in SMALL_WORDS), 1 if len(tokens) > 2 else 0)


class _Explorer:
    def _ipython_display_(self):
        display(self.widget)

    def _show_figure(self, fig):
        self.image.value = figure_png(fig)


# ------------------------------------------------------------------------------------- scrubber
class DenoisingScrubber(_Explorer):
    """A slider over the steps of a finished studio run (``generation.Result``). The decoded predictions are
    cached, so each step is decoded once. Pass ``studio=`` to follow that studio's new results."""

    def __init__(self, pipe, result=None, studio=None, max_frames=8):
        self.pipe, self.max_frames = pipe, max_frames
        self.result, self._decoded = None, {}
        self.step = w.IntSlider(value=0, min=0, max=0, description="Step", style=LABEL, continuous_update=False,
                                layout=w.Layout(width="60%"))
        self.info = w.HTML("<i>Generate a video first: the scrubber shows its denoising steps.</i>")
        self.image = w.Image(format="png")
        self.step.observe(lambda _: self.render(), names="value")
        self.widget = w.VBox([w.HTML("<h4>Denoising, step by step</h4>"), self.step, self.info, self.image])
        if studio is not None:
            studio.on_result(self.show)
            result = result or studio.last_result
        if result is not None:
            self.show(result)

    def show(self, result):
        """Switch to another run; start at its last step."""
        self.result, self._decoded = result, {}
        n = len(result.trajectory)
        with self.step.hold_trait_notifications():
            self.step.max = max(n - 1, 0)
            self.step.value = max(n - 1, 0)
        self.render()

    def predicted_frames(self, step):
        if step not in self._decoded:
            x0 = self.result.trajectory.predictions[step]
            if x0 is None:  # a scheduler that does not predict x0: show the latents decoded instead
                x0 = self.result.trajectory.latents[step]
            self._decoded[step] = decode_prediction(self.pipe, x0)
        return self._decoded[step]

    def render(self):
        if self.result is None or not len(self.result.trajectory):
            return
        traj, step = self.result.trajectory, self.step.value
        fig = scrubber_figure(self.predicted_frames(step), traj.latents[step], step, traj.timesteps[step],
                                   len(traj), self.max_frames)
        self._show_figure(fig)
        self.info.value = (f"{html.escape(self.result.settings.prompt)!s}: step {step + 1} of {len(traj)}, "
                           f"t = {traj.timesteps[step]:g}. Top: the model's guess of the finished video at this "
                           "step; bottom: the latents (3 of 4 channels as colour).")


# ------------------------------------------------------------------------------------- schedules
class ScheduleExplorer(_Explorer):
    """A slider over the training timesteps t and a scheduler dropdown; works without a model."""

    def __init__(self, config=None, picture=None, t=500, scheduler="ddim", steps=20):
        self.config = dict(config) if config is not None else default_scheduler_config()
        self.train = from_name("ddpm", self.config)  # the training (forward) process all samplers share
        self.picture = sample_picture() if picture is None else picture
        last = len(self.train.alphas_cumprod) - 1
        self.t = w.IntSlider(value=min(t, last), min=0, max=last, description="t", style=LABEL,
                             continuous_update=False, layout=w.Layout(width="60%"))
        self.scheduler = w.Dropdown(options=list(SCHEDULER_NAMES), value=scheduler, description="Scheduler",
                                    style=LABEL)
        self.steps = w.IntSlider(value=steps, min=1, max=100, description="Steps", style=LABEL,
                                 continuous_update=False)
        self.timesteps_text = w.HTML()
        self.image = w.Image(format="png")
        for control in (self.t, self.scheduler, self.steps):
            control.observe(lambda _: self.render(), names="value")
        self.widget = w.VBox([w.HTML("<h4>Noise schedule</h4>"), self.t, w.HBox([self.scheduler, self.steps]),
                              self.image, self.timesteps_text])
        self.render()

    def timesteps(self):
        return timesteps_for(self.scheduler.value, self.steps.value, self.config)

    def render(self):
        ts = self.timesteps()
        fig = schedule_figure(self.picture, self.train, self.t.value, ts, self.scheduler.value)
        self._show_figure(fig)
        shown = ", ".join(f"{t:g}" for t in ts)
        self.timesteps_text.value = (f"<b>{self.scheduler.value}</b>, {self.steps.value} steps, visits "
                                     f"{len(ts)} timesteps: <code>{shown}</code>")


# ------------------------------------------------------------------------------------- attention
class AttentionExplorer(_Explorer):
    """Record the attention maps of one UNet call on a prompt (the Record button), then pick a token,
    a frame and a pixel. With ``result=`` (a studio run) it uses that run's prompt and its latents
    halfway through denoising; otherwise fresh noise at t = 500."""

    def __init__(self, pipe=None, prompt="a panda playing a guitar", frames=8, result=None):
        self.pipe, self.result, self.record_ = pipe, result, None
        self.num_frames = result.settings.frames if result is not None else frames
        self.prompt = w.Text(value=result.settings.prompt if result is not None else prompt, description="Prompt",
                             style=LABEL, layout=w.Layout(width="70%"))
        self.record_button = w.Button(description="Record attention", icon="eye")
        self.token = w.Dropdown(options=[], description="Token", style=LABEL)
        self.frame = w.IntSlider(value=0, min=0, max=max(self.num_frames - 1, 0), description="Frame", style=LABEL,
                                 continuous_update=False)
        self.y = w.IntSlider(value=0, min=0, max=0, description="Pixel y", style=LABEL, continuous_update=False)
        self.x = w.IntSlider(value=0, min=0, max=0, description="Pixel x", style=LABEL, continuous_update=False)
        self.status = w.HTML()
        self.image = w.Image(format="png")
        self.record_button.on_click(lambda _: self.record())
        for control in (self.token, self.frame, self.y, self.x):
            control.observe(lambda _: self.render(), names="value")
        self.widget = w.VBox([w.HTML("<h4>Attention</h4>"), w.HBox([self.prompt, self.record_button]),
                              w.HBox([self.token, self.frame]), w.HBox([self.y, self.x]), self.status, self.image])
        if pipe is not None:
            self.record()

    def record(self):
        """Run the UNet once with attention maps kept; errors are shown, not raised."""
        self.record_button.disabled = True
        try:
            if self.pipe is None:
                self.pipe = load_pipeline()
            latents = timestep = None
            r = self.result
            if r is not None and len(r.trajectory) and self.prompt.value == r.settings.prompt:
                mid = len(r.trajectory) // 2
                latents, timestep = r.trajectory.latents[mid], r.trajectory.timesteps[mid]
            rec = record_attention(self.pipe, self.prompt.value, frames=self.num_frames, latents=latents,
                                        timestep=timestep)
        except Exception as e:
            self.status.value = error_html(e).replace("Could not generate", "Could not record")
            return None
        finally:
            self.record_button.disabled = False
        self.record_ = None  # no renders while the controls are being reset
        h, wd = rec.latent_size
        self.token.options = [(f"{i}: {t}", i) for i, t in enumerate(rec.tokens)]
        self.token.value = first_word(rec.tokens)
        self.frame.max = rec.frames - 1
        self.y.max, self.x.max = h - 1, wd - 1
        self.y.value, self.x.value = h // 2, wd // 2
        self.record_ = rec
        self.status.value = (f"{len(rec.cross)} cross-attention and {len(rec.temporal)} temporal layers recorded "
                             f"on {rec.frames} frames of {h}x{wd} latents at t = {rec.timestep:g}; maps are "
                             "averaged over heads and layers (each upsampled to the latents' size).")
        self.render()
        return rec

    def render(self):
        if self.record_ is None or self.token.value is None:
            return
        fig = attention_figure(self.record_, self.token.value, self.frame.value, self.y.value, self.x.value)
        self._show_figure(fig)
