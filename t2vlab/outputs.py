"""Results that read by name and by position, as diffusers' outputs do.

    out = pipe("a red circle moving left")
    out.frames is out["frames"] is out[0]          # the same object three ways
    (frames,) = out.to_tuple()                     # what return_dict=False returns

``Output`` is a dataclass base: its fields, in order, are the positions. Fields that are None are
skipped, as diffusers' ``BaseOutput`` skips them, so position 0 is always the first field that was
set. Unlike diffusers' (a dict underneath), iterating an output gives its values, as a tuple's
iteration does, so ``(frames,) = out`` unpacks; ``keys()`` gives the names.
"""

from __future__ import annotations

import dataclasses


class Output:
    """Mixed into a ``@dataclass``: ``out.name``, ``out["name"]``, ``out[i]``, ``out.to_tuple()``."""

    def keys(self) -> tuple[str, ...]:
        """The names of the fields that are set (not None), in order."""
        return tuple(f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None)

    def to_tuple(self) -> tuple:
        """The values of the fields that are set, in order: ``return_dict=False``'s result."""
        return tuple(getattr(self, name) for name in self.keys())

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{type(self).__name__} has no field {key!r} set; it has {list(self.keys())}")
            return getattr(self, key)
        return self.to_tuple()[key]  # an int or a slice, as on a tuple (IndexError past the end)

    def __iter__(self):
        return iter(self.to_tuple())

    def __len__(self):
        return len(self.keys())
