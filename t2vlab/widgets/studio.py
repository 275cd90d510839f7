"""The studio: a prompt box and a Generate button, with the video, a download and a history.

    from t2vlab.widgets import studio
    studio()            # the trained toy checkpoint on a CPU, the real model when a GPU is there

Generation runs synchronously inside the button's click handler: the kernel is busy until the video
is ready (other cells wait), while the progress bar still moves, since widget updates are sent as
the steps finish. That keeps the code short and lets tests drive it with ``button.click()``.
"""

from __future__ import annotations

import html
import random
import tempfile

import ipywidgets as w
import torch
from IPython.display import display

from ..notebook import load_pipeline  # noqa: F401  (t2vlab.widgets.load_pipeline, for the notebooks)
from ..schedulers import SCHEDULER_NAMES
from ..techniques.prompt_weighting import SYNTAXES
from .generation import FEW_STEPS, Settings, download_html, error_html, few_steps_settings, generate, video_html

MAX_SEED = 2**31 - 1
LABEL = {"description_width": "110px"}  # every control's label column


def _gpu_only() -> str:
    """What a GPU-only control's label says on a machine without one."""
    return "" if torch.cuda.is_available() else " (needs a GPU)"


class Studio:
    """Text-to-video generation in a notebook. ``Studio(pipe).widget`` is the whole UI; ``display(studio)``
    works too. Each finished run is appended to ``history`` (a list of ``generation.Result``); listeners added
    with ``on_result(fn)`` get every new result (the denoising scrubber uses this).

    The click handler runs the generation itself, so the kernel is busy meanwhile (see the module
    docstring). Errors (bad sizes, out of memory...) are shown in the UI as a message, not raised.
    """

    def __init__(self, pipe=None, settings=None, out_dir=None):
        self.pipe = pipe
        self.out_dir = out_dir       # the folder of this studio's videos (a new temporary one on the first run)
        self.history = []            # a generation.Result per finished run
        self.last_error = None       # the exception of the last run, None after a success
        self._listeners = []         # on_result's functions
        s = settings or self._defaults()
        self._add_prompt_boxes(s)        # prompt, negative_prompt
        self._add_sampling_controls(s)   # steps, guidance, frames, width, height, seed and its dice, scheduler
        self._add_memory_switches(s)     # fp16, offload, vae_slicing
        self._add_technique_controls(s)  # free_noise, free_init, freeu, deepcache, compiled, prompt_at, loop,
        #                                  prompt_syntax
        self._add_outputs(s)             # generate, progress, status, video, download, history_box
        self.dice.on_click(self._roll_dice)
        self.generate.on_click(self._on_generate)
        self.widget = self._layout()
        self.widget.add_class("t2vlab-studio")

    # --------------------------------------------------------------------- building the controls
    def _add_prompt_boxes(self, s):
        self.prompt = w.Textarea(value=s.prompt, description="Prompt", rows=2, layout=w.Layout(width="98%"),
                                 style=LABEL, placeholder="describe the video")
        self.negative_prompt = w.Text(value=s.negative_prompt, description="Negative prompt",
                                      layout=w.Layout(width="98%"), style=LABEL,
                                      placeholder="what to steer away from (optional)")

    def _add_sampling_controls(self, s):
        self.steps = w.IntSlider(value=s.steps, min=1, max=100, description="Steps", style=LABEL)
        self.guidance = w.FloatSlider(value=s.guidance, min=0.0, max=20.0, step=0.5, description="Guidance",
                                      style=LABEL)
        self.frames = w.IntSlider(value=s.frames, min=1, max=64, description="Frames", style=LABEL)
        self.width = w.BoundedIntText(value=s.width, min=8, max=1024, step=8, description="Width",
                                      style=LABEL, layout=w.Layout(width="200px"))
        self.height = w.BoundedIntText(value=s.height, min=8, max=1024, step=8, description="Height",
                                       style=LABEL, layout=w.Layout(width="200px"))
        self.seed = w.BoundedIntText(value=s.seed, min=0, max=MAX_SEED, description="Seed", style=LABEL,
                                     layout=w.Layout(width="240px"))
        self.dice = w.Button(description="", icon="dice", tooltip="random seed", layout=w.Layout(width="40px"))
        self.scheduler = w.Dropdown(options=list(SCHEDULER_NAMES), value=s.scheduler, description="Scheduler",
                                    style=LABEL)

    def _add_memory_switches(self, s):
        cuda = torch.cuda.is_available()
        self.fp16 = w.Checkbox(value=s.fp16, description="fp16" + _gpu_only(), disabled=not cuda, indent=False)
        self.offload = w.Checkbox(value=s.offload, description="CPU offload" + _gpu_only(), disabled=not cuda,
                                  indent=False)
        self.vae_slicing = w.Checkbox(value=s.vae_slicing, description="VAE slicing", indent=False)

    def _add_technique_controls(self, s):
        """Long videos, training-free quality, speed and directing (t2vlab.techniques: free_noise, free_init,
        freeu, prompt_travel, deepcache, loops, prompt_weighting; t2vlab.compiled)."""
        self.free_noise = w.BoundedIntText(value=s.free_noise, min=0, max=1024, description="FreeNoise context",
                                           style=LABEL, layout=w.Layout(width="220px"),
                                           tooltip="windows of this many frames (0: off); the model's clip length")
        self.free_init = w.BoundedIntText(value=s.free_init, min=1, max=10, description="FreeInit passes",
                                          style=LABEL, layout=w.Layout(width="200px"), tooltip="1: off")
        self.freeu = w.Checkbox(value=s.freeu, description="FreeU", indent=False)
        self.deepcache = w.BoundedIntText(value=s.deepcache, min=1, max=10, description="DeepCache interval",
                                          style=LABEL, layout=w.Layout(width="220px"),
                                          tooltip="the deep UNet levels every N steps only; 1: off")
        self.compiled = w.Checkbox(value=s.compiled, description="torch.compile" + _gpu_only(),
                                   disabled=not torch.cuda.is_available(), indent=False)
        self.prompt_at = w.Textarea(value=s.prompt_at, description="Prompt at frame", rows=2,
                                    layout=w.Layout(width="98%"), style=LABEL,
                                    placeholder="prompt travel, one per line: '16: a blue square'")
        self.few_steps = w.Dropdown(options=[("off", "off")] + [(e["label"], k) for k, e in FEW_STEPS.items() if e],
                                    value=s.few_steps, description="Few steps", style=LABEL,
                                    layout=w.Layout(width="420px"),
                                    tooltip="a consistency-distilled adapter: sets the sampler, steps and guidance")
        self.few_steps.observe(self._few_steps_chosen, names="value")
        self.loop = w.Checkbox(value=s.loop, description="Loop (last frame flows into the first)", indent=False)
        self.prompt_syntax = w.Dropdown(options=list(SYNTAXES), value=s.prompt_syntax, description="Prompt syntax",
                                        style=LABEL, tooltip="plain text; a1111: (word:1.3) [word]; compel: word+ "
                                                             "(words)1.3")

    def _add_outputs(self, s):
        self.generate = w.Button(description="Generate", button_style="primary", icon="play")
        self.progress = w.IntProgress(value=0, min=0, max=s.steps, description="Denoising", style=LABEL)
        self.status = w.HTML()
        self.video = w.HTML()
        self.download = w.HTML()
        self.history_box = w.HTML("<i>No videos yet.</i>")

    def _layout(self):
        """The controls in rows, then the video, its download link and the history."""
        controls = w.VBox([
            self.prompt, self.negative_prompt,
            w.HBox([self.steps, self.guidance]),
            w.HBox([self.frames, self.scheduler]),
            w.HBox([self.width, self.height, self.seed, self.dice]),
            w.HBox([w.Label("Memory:", layout=w.Layout(width="110px")), self.fp16, self.offload, self.vae_slicing]),
            w.HBox([self.free_noise, self.free_init, self.freeu]),
            w.HBox([w.Label("Speed:", layout=w.Layout(width="110px")), self.deepcache, self.compiled]),
            self.few_steps,
            self.prompt_at,
            w.HBox([self.prompt_syntax, self.loop]),
            w.HBox([self.generate, self.progress]),
            self.status,
        ])
        history = w.Accordion(children=[self.history_box], titles=("History",), selected_index=0)
        return w.VBox([w.HTML("<h3>t2vlab studio</h3>"), controls, self.video, self.download, history])

    def _defaults(self):
        """The pipeline's recommended settings (its checkpoint's size, frames, steps, sampler, a prompt it
        knows); the memory options start as the pipeline is (``load_pipeline`` gives float16 on a GPU)."""
        if self.pipe is None:
            return Settings(fp16=torch.cuda.is_available())
        rec = self.pipe.recommended
        return Settings(prompt=rec.prompt, steps=rec.num_inference_steps, guidance=rec.guidance_scale,
                        frames=rec.num_frames, height=rec.height, width=rec.width, scheduler=rec.scheduler,
                        fp16=self.pipe.dtype == torch.float16, offload=bool(self.pipe.offload_device))

    def _ipython_display_(self):
        display(self.widget)

    # --------------------------------------------------------------------- reading the controls
    def settings(self) -> Settings:
        return Settings(prompt=self.prompt.value, negative_prompt=self.negative_prompt.value,
                             steps=self.steps.value, guidance=self.guidance.value, frames=self.frames.value,
                             height=self.height.value, width=self.width.value, seed=self.seed.value,
                             scheduler=self.scheduler.value, fp16=self.fp16.value, offload=self.offload.value,
                             vae_slicing=self.vae_slicing.value, free_noise=self.free_noise.value,
                             free_init=self.free_init.value, freeu=self.freeu.value, prompt_at=self.prompt_at.value,
                             deepcache=self.deepcache.value, compiled=self.compiled.value, loop=self.loop.value,
                             prompt_syntax=self.prompt_syntax.value, few_steps=self.few_steps.value)

    def on_result(self, fn):
        """Call ``fn(result)`` after every successful generation."""
        self._listeners.append(fn)

    @property
    def last_result(self):
        return self.history[-1] if self.history else None

    # --------------------------------------------------------------------- actions
    def _roll_dice(self, _=None):
        self.seed.value = random.randint(0, MAX_SEED)

    def _few_steps_chosen(self, change):
        """A distilled adapter chosen: the sampler, steps and guidance it samples at; "off": the checkpoint's."""
        chosen = few_steps_settings(change["new"])
        if chosen is None:
            d = self._defaults()
            chosen = dict(scheduler=d.scheduler, steps=d.steps, guidance=d.guidance)
        self.scheduler.value, self.steps.value, self.guidance.value = (chosen["scheduler"], chosen["steps"],
                                                                       chosen["guidance"])

    def _step_done(self, done, total):
        self.progress.max = total
        self.progress.value = done

    def _on_generate(self, _=None):
        self.run()

    def run(self):
        """Generate with the current settings; return the Result, or None after an error (shown in the UI)."""
        settings = self.settings()
        self.generate.disabled = True
        self.progress.max, self.progress.value = settings.steps * settings.free_init, 0
        self.progress.bar_style = ""
        self.status.value = f"<i>Generating: {html.escape(settings.summary())} ...</i>"
        self.last_error = None
        try:
            if self.pipe is None:
                self.status.value = "<i>Loading the model (once) ...</i>"
                self.pipe = load_pipeline()
                self.status.value = f"<i>Generating: {html.escape(settings.summary())} ...</i>"
            if self.out_dir is None:  # one folder for all of this studio's videos
                self.out_dir = tempfile.mkdtemp(prefix="t2vlab-studio-")
            result = generate(self.pipe, settings, on_step=self._step_done, out_dir=self.out_dir)
        except Exception as e:  # shown to the user; the studio stays usable
            self.last_error = e
            self.progress.bar_style = "danger"
            self.status.value = error_html(e)
            return None
        finally:
            self.generate.disabled = False
        self.history.append(result)
        self.progress.bar_style = "success"
        notes = "".join(f"<br><small>note: {html.escape(n)}</small>" for n in result.notes)
        self.status.value = (f"Done in {result.seconds:.1f} s: {html.escape(settings.summary())}. "
                             f"<small>Saved to <code>{html.escape(result.video_path)}</code></small>{notes}")
        self.video.value = video_html(result)
        self.download.value = download_html(result)
        self.history_box.value = self._history_html()
        for fn in self._listeners:
            fn(result)
        return result

    def _history_html(self):
        rows = []
        for i, r in reversed(list(enumerate(self.history, 1))):
            rows.append(f"<tr><td>{i}</td><td>{html.escape(r.settings.prompt)}</td>"
                        f"<td>{html.escape(r.settings.summary())}</td>"
                        f"<td style='white-space:nowrap'>{r.seconds:.1f} s</td>"
                        f"<td><code>{html.escape(r.video_path)}</code></td></tr>")
        return ('<table class="t2vlab-history"><tr><th>#</th><th>prompt</th><th>settings</th><th>time</th>'
                "<th>file</th></tr>" + "".join(rows) + "</table>")


def studio(pipe=None, **settings):
    """Build and display a Studio (keyword arguments set the starting controls); return it."""
    s = Studio(pipe, Settings(**settings) if settings else None)
    display(s.widget)
    return s
