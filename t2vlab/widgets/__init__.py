"""Interactive widgets (ipywidgets) for the notebooks: the studio and three explorers.

    from t2vlab.widgets import Studio, DenoisingScrubber, ScheduleExplorer, AttentionExplorer
    s = Studio(pipe)            # display(s): prompt, settings, Generate, video, download, history
    DenoisingScrubber(pipe, studio=s)
    ScheduleExplorer()
    AttentionExplorer(pipe, prompt="a panda playing a guitar")

The logic they run is in plain functions, one module each: ``generation`` (settings -> video and
trajectory), ``denoising`` (the scrubber's pictures), ``schedule`` (the schedule explorer's),
``attention`` (recording and drawing attention maps), ``figures`` (PNG figures).
"""

from .explorers import AttentionExplorer, DenoisingScrubber, ScheduleExplorer
from .generation import Result, Settings, generate
from .studio import Studio, load_pipeline, studio

__all__ = ["AttentionExplorer", "DenoisingScrubber", "Result", "ScheduleExplorer", "Settings", "Studio",
           "generate", "load_pipeline", "studio"]
