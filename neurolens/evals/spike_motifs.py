"""The synthetic temporal-motif task of the demo spiking network (METHODS.md section 6). numpy only.

Classes are orderings of spike times across channels: class ``k`` is a random permutation
``pi_k`` of the ``C`` channels (templates that agree with an earlier one on more than
``max_agree`` channels are drawn again), and in class ``k`` channel ``c`` fires at offset
``first + spacing * pi_k(c)`` from the motif's start. A sample: a start ``t0`` uniform in
``0..max_start``; each channel, with probability ``p_fire``, spikes once at
``t0 + offset + jitter`` (jitter -1 / 0 / +1 with probabilities ``jitter_p``); plus independent
background spikes (Bernoulli ``background`` per channel per bin).

Every channel fires at most once per motif in every class, so the per-bin input statistics are
the same for every class: a nearly memoryless network without delays is at chance, while a
neuron whose delays line up one class's spikes into one bin detects it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class MotifTask:
    channels: int = 12
    classes: int = 8
    bins: int = 64
    spacing: int = 3
    first: int = 1
    max_start: int = 26
    p_fire: float = 0.9
    jitter_p: tuple[float, float, float] = (0.15, 0.7, 0.15)   # jitter -1, 0, +1
    background: float = 0.02
    max_agree: int = 2
    seed: int = 0        # the templates' seed

    def __post_init__(self):
        last = self.max_start + self.first + self.spacing * (self.channels - 1) + 1
        if last >= self.bins:
            raise ValueError(f"a motif can end at bin {last}, past the {self.bins} bins")
        if self.first < 1:
            raise ValueError("first must be >= 1 (room for a jitter of -1)")

    def to_json(self) -> dict:
        d = asdict(self)
        d["jitter_p"] = list(self.jitter_p)
        return d

    @classmethod
    def from_json(cls, d: dict) -> MotifTask:
        d = dict(d)
        if "jitter_p" in d:
            d["jitter_p"] = tuple(d["jitter_p"])
        return cls(**d)

    def templates(self) -> np.ndarray:
        """``[classes, channels]`` int: the offset (bins after the start) of every channel's
        spike in every class."""
        rng = np.random.default_rng(self.seed)
        perms: list[np.ndarray] = []
        tries = 0
        while len(perms) < self.classes:
            tries += 1
            if tries > 100_000:
                raise ValueError("cannot draw templates that differ enough; lower max_agree "
                                 "or the number of classes")
            p = rng.permutation(self.channels)
            if all(int((p == q).sum()) <= self.max_agree for q in perms):
                perms.append(p)
        return self.first + self.spacing * np.stack(perms)

    def sample(self, n: int, seed: int, labels: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` samples: spikes ``[n, bins, channels]`` uint8 (0/1) and labels ``[n]`` int64
        (balanced, shuffled, unless given)."""
        rng = np.random.default_rng(seed)
        off = self.templates()
        if labels is None:
            labels = rng.permutation(np.arange(n) % self.classes)
        labels = np.asarray(labels, dtype=np.int64)
        x = (rng.random((n, self.bins, self.channels)) < self.background).astype(np.uint8)
        t0 = rng.integers(0, self.max_start + 1, n)
        fire = rng.random((n, self.channels)) < self.p_fire
        jit = rng.choice(np.array([-1, 0, 1]), size=(n, self.channels), p=list(self.jitter_p))
        t = t0[:, None] + off[labels] + jit
        rows, cols = np.nonzero(fire)
        x[rows, t[rows, cols], cols] = 1
        return x, labels


#: the demo task and its fixed splits (seeds of the sample draws); training draws fresh samples
#: per epoch from seeds 1000 + epoch (per training seed)
DEMO_TASK = MotifTask()
PROBE_SEED, HELDOUT_SEED = 7, 8
PROBE_SIZE, HELDOUT_SIZE = 512, 2048


def class_names(task: MotifTask = DEMO_TASK) -> list[str]:
    return [f"motif{k}" for k in range(task.classes)]
