"""Global seeding: one seed makes initialisation, dropout masks and data shuffling
reproducible, as ``torch.manual_seed``."""
from __future__ import annotations

import numpy as np

_generator = np.random.default_rng(0)
_dropout_counter = [0]
_seed = [0]


def manual_seed(seed: int) -> None:
    """Seed every random source cnnfast uses."""
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed}")
    global _generator
    _generator = np.random.default_rng(seed)
    _seed[0] = seed
    _dropout_counter[0] = 0


def seed() -> int:
    """Seeds from OS entropy and returns the seed used, as ``torch.seed``."""
    s = int(np.random.SeedSequence().entropy % (2 ** 63))
    manual_seed(s)
    return s


def initial_seed() -> int:
    return _seed[0]


def generator() -> np.random.Generator:
    """The NumPy generator behind initialisation and shuffling."""
    return _generator


def next_dropout_seed() -> tuple[int, int]:
    """(seed, offset) for one dropout call: a counter-based RNG keyed by these gives
    the same mask for the same seed whatever the thread count."""
    offset = _dropout_counter[0]
    _dropout_counter[0] += 1
    return _seed[0], offset


def get_rng_state() -> dict:
    return {"bit_generator": _generator.bit_generator.state, "seed": _seed[0], "dropout_counter": _dropout_counter[0]}


def set_rng_state(state: dict) -> None:
    global _generator
    g = np.random.default_rng()
    g.bit_generator.state = state["bit_generator"]
    _generator = g
    _seed[0] = int(state["seed"])
    _dropout_counter[0] = int(state["dropout_counter"])


class Generator:
    """A random source of its own, as ``torch.Generator``: pass it as ``generator=`` to
    ``randn``/``rand``/``randint``/``randperm``, ``DataLoader``, ``RandomSampler`` or
    ``random_split`` to make them independent of the global seed."""

    def __init__(self, device="cpu"):
        self._seed = int(np.random.SeedSequence().entropy % (2 ** 63))
        self._rng = np.random.default_rng(self._seed)

    def manual_seed(self, seed: int) -> "Generator":
        seed = int(seed)
        if seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed}")
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        return self

    def seed(self) -> int:
        s = int(np.random.SeedSequence().entropy % (2 ** 63))
        self.manual_seed(s)
        return s

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> dict:
        return dict(self._rng.bit_generator.state)

    def set_state(self, state: dict) -> "Generator":
        self._rng.bit_generator.state = state
        return self


def draw_seed(generator: "Generator | None" = None) -> int:
    """A 63-bit seed drawn from ``generator`` or the global generator: how a loader or a
    split turns ``manual_seed`` into its own order, as torch draws its base seed."""
    rng = _generator if generator is None else generator._rng
    return int(rng.integers(0, 2 ** 63 - 1))
