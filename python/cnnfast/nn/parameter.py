"""``Parameter``: a Tensor that a Module registers as trainable, as ``torch.nn.Parameter``."""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf Tensor that requires grad by default and that ``Module.__setattr__``
    registers in ``_parameters``. ``Parameter(t)`` shares ``t``'s array (no copy)."""

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            data = np.empty((0,), np.float32)
        super().__init__(data._array if isinstance(data, Tensor) else data)
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, protocol):
        # Pickling is not a checkpoint format here (see cnnfast.save); keep copy.deepcopy working.
        return (Parameter, (self._array.copy(), self.requires_grad))


class Buffer(Tensor):
    """Marks a Tensor to be registered as a buffer when assigned to a Module attribute
    (as ``torch.nn.Buffer``); ``persistent=False`` keeps it out of ``state_dict``."""

    def __init__(self, data, persistent: bool = True):
        super().__init__(data._array if isinstance(data, Tensor) else data)
        self.persistent = persistent
