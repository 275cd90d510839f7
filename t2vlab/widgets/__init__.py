"""Interactive widgets (ipywidgets) for the notebooks: the studio and three explorers.

    from t2vlab.widgets import Studio, DenoisingScrubber, ScheduleExplorer, AttentionExplorer
    s = Studio(pipe)            # display(s): prompt, settings, Generate, video, download, history
    DenoisingScrubber(pipe, studio=s)
    ScheduleExplorer()
    AttentionExplorer(pipe, prompt="a panda playing a guitar")

The logic they run (generation, trajectories, attention maps, figures) is in ``core``, as plain functions.
"""

from . import core
from .core import Result, Settings, generate
from .explorers import AttentionExplorer, DenoisingScrubber, ScheduleExplorer
from .studio import Studio, load_pipeline, studio

__all__ = ["AttentionExplorer", "DenoisingScrubber", "Result", "ScheduleExplorer", "Settings", "Studio", "core",
           "generate", "load_pipeline", "studio"]
