"""What a spiking network's runs return: :class:`SNNOutput` (a classified sample set) and
:class:`SNNComparison` (before / after edits). Both offer ``to_json()`` and ``summary()`` (the
plain-text form the CLI prints)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _acc(x: float | None) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


@dataclass
class SNNOutput:
    """Classification of a sample set: per sample the prediction and the readout's class
    probabilities at every time step (``probs`` ``[n, time, classes]``; the prediction is the
    argmax of their sum over time)."""

    predictions: np.ndarray          # [n] int64
    probs: np.ndarray                # [n, time, classes] float32
    labels: np.ndarray | None        # [n] int64
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.predictions.shape[0])

    @property
    def scores(self) -> np.ndarray:
        """``[n, classes]``: the mean over time of the class probabilities."""
        return self.probs.mean(1)

    @property
    def accuracy(self) -> float | None:
        if self.labels is None:
            return None
        return float((self.predictions == self.labels).mean())

    def per_class_accuracy(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for k, name in enumerate(self.class_names):
            m = self.labels == k if self.labels is not None else None
            out[name] = (float((self.predictions[m] == k).mean())
                         if m is not None and m.any() else None)
        return out

    def confusion(self) -> np.ndarray:
        """``[true, predicted]`` counts."""
        c = len(self.class_names)
        m = np.zeros((c, c), dtype=np.int64)
        if self.labels is not None:
            np.add.at(m, (self.labels, self.predictions), 1)
        return m

    def to_json(self, per_sample: bool = False) -> dict:
        d = {"n": len(self), "accuracy": self.accuracy,
             "per_class_accuracy": self.per_class_accuracy(), "class_names": self.class_names}
        if per_sample:
            d["predictions"] = self.predictions.tolist()
            d["labels"] = None if self.labels is None else self.labels.tolist()
            d["scores"] = np.round(self.scores, 6).tolist()
        return d

    def summary(self, per_sample: bool = True, max_rows: int = 20) -> str:
        """Per sample the prediction (and label), then the accuracy overall and per class."""
        lines = []
        if per_sample:
            sc = self.scores
            for i in range(min(len(self), max_rows)):
                p = int(self.predictions[i])
                lab = ("" if self.labels is None else
                       f"  label {self.class_names[int(self.labels[i])]:>10s}"
                       f"{'' if int(self.labels[i]) == p else '  (wrong)'}")
                lines.append(f"sample {i:4d}: {self.class_names[p]:>10s} "
                             f"(p {sc[i, p]:.3f}){lab}")
            if len(self) > max_rows:
                lines.append(f"... {len(self) - max_rows} more (--json lists every sample)")
        if self.labels is not None:
            lines.append(f"accuracy {self.accuracy:.4f} on {len(self)} samples")
            lines.append("per class: " + ", ".join(
                f"{k} {_acc(v).strip()}" for k, v in self.per_class_accuracy().items()))
        else:
            lines.append(f"{len(self)} samples classified (no labels)")
        return "\n".join(lines)


@dataclass
class SNNComparison:
    before: SNNOutput
    after: SNNOutput

    @property
    def changed(self) -> np.ndarray:
        return self.before.predictions != self.after.predictions

    @property
    def n_changed(self) -> int:
        return int(self.changed.sum())

    @property
    def relative(self) -> float | None:
        b, a = self.before.accuracy, self.after.accuracy
        return None if b is None or a is None or b == 0 else a / b

    def to_json(self) -> dict:
        pb, pa = self.before.per_class_accuracy(), self.after.per_class_accuracy()
        return {"n": len(self.before), "n_changed": self.n_changed,
                "accuracy_before": self.before.accuracy, "accuracy_after": self.after.accuracy,
                "per_class": {k: {"before": pb[k], "after": pa[k]} for k in pb}}

    def summary(self) -> str:
        """Accuracy overall and per class, before / after, and how many predictions changed."""
        pb, pa = self.before.per_class_accuracy(), self.after.per_class_accuracy()
        lines = [f"{'class':12s} {'before':>7s} {'after':>7s}"]
        lines += [f"{k:12s} {_acc(pb[k]):>7s} {_acc(pa[k]):>7s}" for k in pb]
        lines.append(f"{'all':12s} {_acc(self.before.accuracy):>7s} "
                     f"{_acc(self.after.accuracy):>7s}"
                     + (f"   relative {self.relative:.3f}" if self.relative is not None else ""))
        lines.append(f"{self.n_changed}/{len(self.before)} predictions changed")
        return "\n".join(lines)
