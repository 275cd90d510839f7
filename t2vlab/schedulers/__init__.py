"""Noise schedulers (samplers) for text-to-video diffusion, written to be read.

Every class takes a diffusers ``scheduler_config.json`` (``from_config`` / ``from_pretrained``) and
produces the same trajectories as the diffusers class of the same name. ``from_name`` maps the
short names of the notebooks' dropdown to a class plus config overrides.
"""

from .base import Scheduler, SchedulerOutput, SigmaScheduler
from .config import SchedulerConfig
from .ddim import DDIMScheduler
from .ddpm import DDPMScheduler
from .dpm_solver import DPMSolverMultistepScheduler
from .euler import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler
from .lcm import LCMScheduler
from .lms import LMSDiscreteScheduler
from .pndm import PNDMScheduler

SCHEDULER_CLASSES = {cls.__name__: cls for cls in (
    DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
    EulerAncestralDiscreteScheduler, PNDMScheduler, LMSDiscreteScheduler, LCMScheduler)}

# short name -> (class, config overrides applied on top of the given config)
NAMED_SCHEDULERS = {
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                            "use_karras_sigmas": False}),
    "dpm++-karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                   "use_karras_sigmas": True}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-a": (EulerAncestralDiscreteScheduler, {}),
    "pndm": (PNDMScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),
    "lcm": (LCMScheduler, {}),  # for consistency-distilled checkpoints (few steps, little or no guidance)
    "lcm-mcm": (LCMScheduler, {"timestep_scaling": 4.0}),  # MCM's adapters, as their authors sample them
    "lcm-t2v-turbo": (LCMScheduler, {"timestep_selection": "stride"}),  # T2V-Turbo's 999, 759, 519, 279 for 4 steps
    "lcm-upper": (LCMScheduler, {"timestep_selection": "even_upper"}),  # 999, 799, 599, 399: t2vlab distill's students
}
SCHEDULER_NAMES = tuple(NAMED_SCHEDULERS)


def from_name(name: str, config=None, **overrides) -> Scheduler:
    """Scheduler for a dropdown entry, e.g. ``from_name("dpm++", pipe.scheduler.config)``."""
    key = str(name).strip().lower()
    if key not in NAMED_SCHEDULERS:
        raise ValueError(f"unknown scheduler name {name!r}; valid names: {', '.join(SCHEDULER_NAMES)}")
    cls, preset = NAMED_SCHEDULERS[key]
    return cls.from_config(config, **{**preset, **overrides})


def from_config(config, **overrides) -> Scheduler:
    """Scheduler of the class named by the config's ``_class_name``."""
    return Scheduler.from_config(config, **overrides)


__all__ = ["DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "EulerAncestralDiscreteScheduler",
           "EulerDiscreteScheduler", "LCMScheduler", "LMSDiscreteScheduler", "NAMED_SCHEDULERS", "PNDMScheduler",
           "SCHEDULER_CLASSES", "SCHEDULER_NAMES", "Scheduler", "SchedulerConfig", "SchedulerOutput",
           "SigmaScheduler", "from_config", "from_name"]
