"""Scheduler configs as diffusers writes them: reading, checking, carrying over, saving.

None of this is sampling maths (that is ``base.py`` and one file per sampler); it is what lets a
scheduler be swapped with ``NewScheduler.from_config(pipe.scheduler.config)`` and read or write a
``scheduler_config.json`` that diffusers reads too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from ..atomic import write_text
from ..checks import integer

CONFIG_NAME = "scheduler_config.json"
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

# Config keys shared by every scheduler (names and defaults as in diffusers' scheduler configs).
BETA_DEFAULTS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
}


class SchedulerConfig(Mapping):
    """Read-only mapping with attribute access: ``cfg["beta_end"]`` and ``cfg.beta_end``."""

    def __init__(self, data):
        object.__setattr__(self, "_data", dict(data))

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __getattr__(self, name):
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"scheduler config has no key {name!r}") from None

    def __setattr__(self, name, value):
        raise AttributeError("scheduler config is read-only; use Scheduler.from_config(config, key=value)")

    def __repr__(self):
        return f"SchedulerConfig({self._data!r})"


class ConfigMixin:
    """Config in and out for a scheduler class.

    A class sets ``_defaults`` (every config key of the diffusers class of the same name, with its
    default), ``_only`` (key -> allowed values, for options whose other values change the maths and
    are not implemented here) and ``_choices`` (key -> valid values). ``_init_config`` checks a
    config against them and keeps it in ``self._cfg``.
    """

    _defaults: dict = dict(BETA_DEFAULTS)
    _only: dict = {}
    _choices = {"beta_schedule": BETA_SCHEDULES, "prediction_type": PREDICTION_TYPES,
                "timestep_spacing": TIMESTEP_SPACINGS}

    def _init_config(self, config) -> dict:
        name = type(self).__name__
        unknown = sorted(set(config) - set(self._defaults))
        if unknown:
            raise TypeError(f"{name} got unknown config keys {unknown}; use from_config to ignore extra keys")
        cfg = {**self._defaults, **config}
        for key, allowed in self._choices.items():
            if key in cfg and cfg[key] not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {cfg[key]!r}")
        for key, allowed in self._only.items():
            if cfg[key] not in allowed:
                raise NotImplementedError(f"{name}: {key}={cfg[key]!r} is not implemented in t2vlab "
                                          f"(supported: {allowed})")
        integer("num_train_timesteps", cfg["num_train_timesteps"], low=2, high=100_000)
        self._cfg, self._explicit, self._hidden = cfg, set(config), {}
        return cfg

    @property
    def config(self) -> SchedulerConfig:
        used_defaults = sorted(set(self._defaults) - self._explicit)
        return SchedulerConfig({**self._hidden, **self._cfg, "_class_name": type(self).__name__,
                                "_use_default_values": used_defaults})

    @classmethod
    def from_config(cls, config=None, **overrides):
        """Build from a diffusers scheduler config (dict, ``.config`` of any scheduler, ours or
        diffusers'). Keys this class does not know are kept aside (and passed on by ``.config``) so
        that switching DDIM -> DPM -> DDIM keeps e.g. ``clip_sample``; keys the source left at its own
        defaults (``_use_default_values``) are not carried over, as in diffusers. Called on a base
        class (``Scheduler``), it builds the class the config's ``_class_name`` names."""
        if vars(cls).get("is_base_class"):
            return cls.named_subclass((config or {}).get("_class_name")).from_config(config, **overrides)
        src = dict(config or {})
        used_defaults = set(src.pop("_use_default_values", None) or ())
        src = {k: v for k, v in src.items() if k not in used_defaults}
        bad = sorted(set(overrides) - set(cls._defaults))
        if bad:
            raise TypeError(f"{cls.__name__} has no config keys {bad}")
        own = {k: v for k, v in src.items() if k in cls._defaults}
        sched = cls(**{**own, **overrides})
        sched._hidden = {k: v for k, v in src.items() if k not in cls._defaults and not k.startswith("_")}
        return sched

    @classmethod
    def named_subclass(cls, name):
        """The sampler class called ``name`` among this class's subclasses (the ones imported so far)."""
        found, todo = {}, list(cls.__subclasses__())
        while todo:
            sub = todo.pop()
            todo += sub.__subclasses__()
            if not vars(sub).get("is_base_class"):
                found[sub.__name__] = sub
        if name not in found:
            raise ValueError(f"_class_name must be one of {sorted(found)}, got {name!r}")
        return found[name]

    @classmethod
    def from_pretrained(cls, path, subfolder: str | None = None, **overrides):
        """Read ``scheduler_config.json`` from a folder (optionally ``subfolder``) or a json file path."""
        file = os.path.join(path, subfolder or "", CONFIG_NAME) if os.path.isdir(path) else path
        with open(file, encoding="utf-8") as f:
            return cls.from_config(json.load(f), **overrides)

    def save_pretrained(self, folder) -> str:
        """Write ``scheduler_config.json`` in the diffusers format (readable by diffusers' classes)."""
        data = {k: v for k, v in self.config.items() if k != "_use_default_values"}
        file = os.path.join(folder, CONFIG_NAME)
        write_text(file, json.dumps(data, indent=2, sort_keys=True))  # whole or not at all
        return file

    def __repr__(self):
        return f"{type(self).__name__}({json.dumps(self._cfg)})"
