"""Memorization metrics and the ``neurolens reproduce memorization`` protocol on the demo
diffusion model.

- memorized prompts: how much of each generation is a copy of the prompt's training image,
  averaged over several seeds, before and after the edit. The headline score is the *copy
  similarity*: the normalised correlation of generation and training image after both have the
  mean image of that digit subtracted. Plain correlation (also reported) cannot tell a copy from
  any other image of the same digit: two different training images of one digit correlate 0.74
  on average in this data, so an edit that keeps the digit but removes the copy could at best
  lower it by a quarter. The copy similarity of two different images of one digit averages 0.00
  (as SSCD, the paper's copy detector, scores non-copies near zero);
- ordinary prompts (``a handwritten digit 3``): accuracy of a digit classifier fitted on the
  scikit-learn digits, and diversity (mean pairwise pixel distance between seeds);
- the "shared subspace": IoU of the masks found from two disjoint memorized subsets, and how
  well the mask from one subset removes the memorization of the other.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurolens.errors import InputError
from neurolens.methods import memorization as mz

PAPER = {"similarity_drop": "memorized generations no longer match their training images "
                            "(SSCD similarity falls below the memorization threshold)",
         "quality": "CLIP score / FID of ordinary prompts about unchanged",
         "iou": "masks from different memorized sets overlap strongly (shared subspace)"}
TARGETS = {"similarity_ratio_max": 0.5, "accuracy_ratio_min": 0.9}


def load_sets(folder=None) -> tuple[list[dict], list[dict]]:
    from neurolens.resources import prompts_dir
    d = prompts_dir() if folder is None else Path(folder)
    for name in ("diffusion_memorized.jsonl", "diffusion_ordinary.jsonl"):
        if not (d / name).is_file():
            raise InputError(f"prompt set {d / name} is missing (the demo diffusion trainer "
                             "writes it with --prompts-out)")
    mem = [json.loads(x) for x in (d / "diffusion_memorized.jsonl").read_text().splitlines() if x]
    ordi = [json.loads(x) for x in (d / "diffusion_ordinary.jsonl").read_text().splitlines() if x]
    return mem, ordi


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised (Pearson) correlation of two images."""
    a = a.reshape(-1).astype(np.float64) - a.mean()
    b = b.reshape(-1).astype(np.float64) - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


@dataclass
class DigitClassifier:
    model: object

    @classmethod
    def fit(cls) -> DigitClassifier:
        from sklearn.linear_model import LogisticRegression

        from neurolens.evals.data import digits_16
        x, y = digits_16()
        clf = LogisticRegression(max_iter=2000, C=0.5)
        clf.fit(x.reshape(len(x), -1), y)
        return cls(clf)

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = images[..., 0] if images.ndim == 4 else images
        return self.model.predict(x.reshape(len(x), -1))


MEMORIZED_SEEDS = (0, 1, 2)   # generations per memorized prompt (similarity is their mean)
ORDINARY_SEEDS = 8            # generations per ordinary prompt (accuracy, diversity)
PROBE_SEEDS = 16              # per ordinary probe prompt when choosing rho (accuracy)


def _digit_means() -> tuple[np.ndarray, np.ndarray]:
    from neurolens.evals.data import digits_16
    imgs, labels = digits_16()
    return imgs, np.stack([imgs[labels == d].mean(0) for d in range(10)])


def copy_similarity(gen: np.ndarray, train: np.ndarray, digit_mean: np.ndarray) -> float:
    """Correlation of what is specific to the training image (its difference from the mean
    image of its digit) with the same difference in the generation: 1 for a copy, about 0 for
    another image of the same digit."""
    return correlation(gen - digit_mean, train - digit_mean)


def memorized_scores(dm, rows: list[dict], edits=None, seeds=MEMORIZED_SEEDS, steps=20,
                     guidance=3.0, images: list | None = None) -> dict[str, list[float]]:
    """Per prompt, over its generations (one per seed): mean copy similarity (``copy``) and
    mean plain correlation (``raw``) with its training image. ``images`` (a list) receives the
    generations."""
    imgs, means = _digit_means()
    prompts = [r["prompt"] for r in rows for _ in seeds]
    sd = [1000 * s + i for i, r in enumerate(rows) for s in seeds]
    out = dm.generate(prompts, edits=edits, steps=steps, guidance=guidance, seed=sd).images
    if images is not None:
        images.append(out)
    copy, raw = [], []
    for i, r in enumerate(rows):
        g = out[i * len(seeds):(i + 1) * len(seeds), ..., 0]
        t, m = imgs[r["image_index"]], means[r["digit"]]
        copy.append(float(np.mean([copy_similarity(x, t, m) for x in g])))
        raw.append(float(np.mean([correlation(x, t) for x in g])))
    return {"copy": copy, "raw": raw}


def memorized_similarity(dm, rows: list[dict], edits=None, seeds=MEMORIZED_SEEDS, steps=20,
                         guidance=3.0, images: list | None = None) -> list[float]:
    """Per prompt: the mean copy similarity of its generations to its training image."""
    return memorized_scores(dm, rows, edits, seeds, steps, guidance, images)["copy"]


def ordinary_quality(dm, rows: list[dict], clf: DigitClassifier, edits=None,
                     n_seeds=ORDINARY_SEEDS, steps=20, guidance=3.0) -> dict:
    prompts = [r["prompt"] for r in rows for _ in range(n_seeds)]
    digits = np.array([r["digit"] for r in rows for _ in range(n_seeds)])
    sd = [5000 + 100 * i + s for i in range(len(rows)) for s in range(n_seeds)]
    out = dm.generate(prompts, edits=edits, steps=steps, guidance=guidance, seed=sd).images
    acc = float((clf.predict(out) == digits).mean())
    div = []
    for i in range(len(rows)):
        g = out[i * n_seeds:(i + 1) * n_seeds].reshape(n_seeds, -1)
        d = np.sqrt(((g[:, None] - g[None]) ** 2).mean(-1))
        div.append(d[np.triu_indices(n_seeds, 1)].mean())
    return {"accuracy": acc, "diversity": float(np.mean(div)), "images": out}


RHO_SWEEP = (0.01, 0.02, 0.03, 0.05, 0.1)


def _masks_edit(masks: dict) -> object:
    from neurolens.spec.edits import EditSet, MaskWeights
    return EditSet([MaskWeights(s, m.astype(np.uint8)) for s, m in masks.items() if m.any()])


def _mean(x) -> float:
    return float(np.mean(x)) if len(x) else 0.0


def _ratio(after: float, before: float) -> float:
    return after / before if before else 0.0


def _meets(similarity_ratio: float, accuracy_ratio: float) -> bool:
    """Both targets: copy similarity at most halved, accuracy within 10%."""
    return (similarity_ratio <= TARGETS["similarity_ratio_max"]
            and accuracy_ratio >= TARGETS["accuracy_ratio_min"])


def reproduce(dm, *, steps: int = 20, guidance: float = 3.0, rho: float | None = None,
              tau: int = mz.TAU, sweep=RHO_SWEEP, log=print, prompts_dir=None) -> dict:
    """The paper's protocol on a memorization demo pipeline.

    For every rho of ``sweep`` (the share of each FFN output row a mask may take) the masks are
    fitted on all memorized prompts against the base set (the ordinary *probe* prompts) and
    scored on the memorized prompts, on the ordinary probe prompts and on the ordinary *eval*
    prompts. ``rho=None`` chooses rho without the eval prompts: the smallest rho that halves the
    memorized prompts' copy similarity while the probe prompts keep 90% of their classifier
    accuracy (the paper's 1% when none does); the headline is that row, and its eval-prompt
    accuracy is the held-out check. Masks of the disjoint subsets A and B give the IoU, and A's
    mask is also applied to B's prompts (the shared-subspace claim)."""
    t0 = time.perf_counter()
    mem, ordi = load_sets(prompts_dir)
    ordinary = [r for r in ordi if r["split"] == "eval"]
    probe_ord = [r for r in ordi if r["split"] == "probe"]
    base_prompts = [r["prompt"] for r in probe_ord]
    set_a = [r for r in mem if r["split"] == "A"]
    set_b = [r for r in mem if r["split"] == "B"]
    clf = DigitClassifier.fit()
    kw = {"steps": steps, "guidance": guidance}
    log(f"baseline: {len(mem)} memorized prompts, {len(ordinary)} ordinary prompts")
    mem_img0: list = []
    s0 = memorized_scores(dm, mem, images=mem_img0, **kw)
    q0 = ordinary_quality(dm, ordinary, clf, **kw)
    qp0 = ordinary_quality(dm, probe_ord, clf, n_seeds=PROBE_SEEDS, **kw)["accuracy"]
    log(f"column norms (first {tau} steps): base set, memorized subsets A and B, all memorized")
    nb = mz.column_norms(dm, base_prompts, tau=tau, seed=10_000, **kw)
    na = mz.column_norms(dm, [r["prompt"] for r in set_a], tau=tau, **kw)
    nbb = mz.column_norms(dm, [r["prompt"] for r in set_b], tau=tau, **kw)
    nall = mz.column_norms(dm, [r["prompt"] for r in mem], tau=tau, **kw)
    in_a = [r["split"] == "A" for r in mem]
    c0, r0, acc0 = _mean(s0["copy"]), _mean(s0["raw"]), q0["accuracy"]
    c0_b = _mean([c for c, a in zip(s0["copy"], in_a) if not a])

    rows, images = [], {}
    # a rho to choose falls back to the paper's, so that one is always measured
    for r_ in sorted(set(sweep) | {mz.RHO if rho is None else rho}):
        masks = mz.masks_from_norms(dm, nall, nb, rho=r_, tau=tau)
        edits = _masks_edit(masks)
        mem_img1: list = []
        s1 = memorized_scores(dm, mem, edits=edits, images=mem_img1, **kw)
        q1 = ordinary_quality(dm, ordinary, clf, edits=edits, **kw)
        qp1 = ordinary_quality(dm, probe_ord, clf, edits=edits, n_seeds=PROBE_SEEDS,
                               **kw)["accuracy"]
        ma, mb = (mz.masks_from_norms(dm, n, nb, rho=r_, tau=tau) for n in (na, nbb))
        sb = memorized_scores(dm, set_b, edits=_masks_edit(ma), **kw)
        n_del = sum(int(m.sum()) for m in masks.values())
        total = sum(m.size for m in masks.values())
        c1, rw1 = _mean(s1["copy"]), _mean(s1["raw"])
        row = {"rho": r_, "weights_deleted": n_del, "fraction": round(n_del / total, 5),
               "similarity_after": round(c1, 4),
               "similarity_ratio": round(_ratio(c1, c0), 4),
               "raw_correlation_after": round(rw1, 4),
               "raw_correlation_ratio": round(_ratio(rw1, r0), 4),
               "probe_accuracy_ratio": round(_ratio(qp1, qp0), 4),
               "accuracy_after": round(q1["accuracy"], 4),
               "accuracy_ratio": round(_ratio(q1["accuracy"], acc0), 4),
               "diversity_after": round(q1["diversity"], 4),
               "iou_A_B": round(mz.iou(ma, mb), 4),
               "transfer_A_to_B_after": round(_mean(sb["copy"]), 4),
               "per_prompt_after": [round(x, 3) for x in s1["copy"]],
               "per_site": {dm.aliases()[s]: int(m.sum()) for s, m in masks.items()}}
        row["passes_on_probe"] = _meets(row["similarity_ratio"], row["probe_accuracy_ratio"])
        row["meets_targets"] = _meets(row["similarity_ratio"], row["accuracy_ratio"])
        log(f"rho {r_:.0%}: {n_del} weights ({row['fraction']:.2%}); copy similarity "
            f"{c0:.3f} -> {c1:.3f} (plain correlation {r0:.3f} -> {rw1:.3f}); accuracy "
            f"probe x{row['probe_accuracy_ratio']:.2f}, eval {acc0:.2f} -> "
            f"{row['accuracy_after']:.2f}; IoU(A, B) {row['iou_A_B']:.3f}")
        rows.append(row)
        images[r_] = (q1["images"], mem_img1[0])
    choice = "given"
    if rho is None:
        passing = [w["rho"] for w in rows if w["passes_on_probe"]]
        rho = passing[0] if passing else mz.RHO
        choice = "probe" if passing else "none passed on the probe prompts: the paper's value"
        log(f"rho {rho:.0%}: {choice}")
    images_after, mem_after = images[rho]
    head = next(r_ for r_ in rows if abs(r_["rho"] - rho) < 1e-12)
    result = {
        "experiment": "memorization", "model": dm.name_or_path, "steps": steps,
        "guidance": guidance, "rho": rho, "tau": tau, "rho_choice": choice,
        "memorized_similarity": {"measure": "copy similarity (correlation after subtracting "
                                            "the digit's mean image)",
                                 "before": round(c0, 4), "after": head["similarity_after"],
                                 "ratio": head["similarity_ratio"],
                                 "per_prompt_before": [round(s, 3) for s in s0["copy"]],
                                 "per_prompt_after": head["per_prompt_after"]},
        "memorized_raw_correlation": {"before": round(r0, 4),
                                      "after": head["raw_correlation_after"],
                                      "ratio": head["raw_correlation_ratio"]},
        "ordinary": {"accuracy_before": round(acc0, 4),
                     "accuracy_after": head["accuracy_after"],
                     "accuracy_ratio": head["accuracy_ratio"],
                     "diversity_before": round(q0["diversity"], 4),
                     "diversity_after": head["diversity_after"]},
        "mask": {"weights_deleted": head["weights_deleted"], "fraction": head["fraction"],
                 "ffn_out_weights": sum(dm.resolve(s).module.weight.numel()
                                        for s in dm.sites()),
                 "per_site": head["per_site"]},
        "mask_iou_A_B": head["iou_A_B"],
        "transfer_A_to_B": {"before": round(c0_b, 4),
                            "after": head["transfer_A_to_B_after"]},
        "sweep": rows,
        "paper": PAPER, "targets": TARGETS, "seconds": round(time.perf_counter() - t0, 1),
    }
    result["targets_met"] = {
        "similarity_halved": head["similarity_ratio"] <= TARGETS["similarity_ratio_max"],
        "accuracy_within_10pct": head["accuracy_ratio"] >= TARGETS["accuracy_ratio_min"],
    }
    result["_images"] = {"before": q0["images"], "after": images_after,
                         "memorized_before": mem_img0[0], "memorized_after": mem_after}
    return result


def format_table(r: dict) -> str:
    ms, o, rw = r["memorized_similarity"], r["ordinary"], r["memorized_raw_correlation"]
    lines = [f"memorization subspace (rho {r['rho']:g}, tau {r['tau']}): "
             f"{r['mask']['weights_deleted']} of {r['mask']['ffn_out_weights']} FFN output "
             f"weights deleted ({r['mask']['fraction']:.2%})", "",
             f"{'metric':38s} {'before':>8s} {'after':>8s} {'relative':>9s}   paper",
             f"{'memorized: copy similarity':38s} {ms['before']:8.3f} "
             f"{ms['after']:8.3f} {ms['ratio']:9.3f}   {PAPER['similarity_drop']}",
             f"{'memorized: plain correlation':38s} {rw['before']:8.3f} "
             f"{rw['after']:8.3f} {rw['ratio']:9.3f}   (0.74 for another image of the digit)",
             f"{'ordinary: digit classifier accuracy':38s} {o['accuracy_before']:8.3f} "
             f"{o['accuracy_after']:8.3f} {o['accuracy_ratio']:9.3f}   {PAPER['quality']}",
             f"{'ordinary: diversity (pixel RMS dist.)':38s} {o['diversity_before']:8.3f} "
             f"{o['diversity_after']:8.3f}",
             "",
             f"mask IoU between disjoint memorized subsets A and B: {r['mask_iou_A_B']:.3f} "
             f"({PAPER['iou']})",
             f"mask of A applied to B's prompts: similarity {r['transfer_A_to_B']['before']:.3f}"
             f" -> {r['transfer_A_to_B']['after']:.3f}",
             "targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}"
                                     for k, v in r["targets_met"].items()),
             ""]
    how = r.get("rho_choice", "given")
    if how == "probe":
        how = "the smallest that halves the copy similarity with probe accuracy >= 90%"
    lines += [f"rho sweep (masks of all memorized prompts, tau fixed; rho {r['rho']:g}: {how}):",
              f"{'rho':>6s} {'deleted':>9s} {'copy sim.':>10s} {'relative':>9s} {'probe acc':>9s} "
              f"{'accuracy':>9s} {'relative':>9s} {'IoU(A,B)':>9s} {'on eval':>8s}"]
    for w in r.get("sweep", []):
        lines.append(f"{w['rho']:6.0%} {w['fraction']:9.2%} {w['similarity_after']:10.3f} "
                     f"{w['similarity_ratio']:9.3f} {w['probe_accuracy_ratio']:9.3f} "
                     f"{w['accuracy_after']:9.3f} {w['accuracy_ratio']:9.3f} {w['iou_A_B']:9.3f} "
                     f"{'met' if w['meets_targets'] else '-':>8s}")
    return "\n".join(lines)


def image_rows(result: dict, prompts_dir=None) -> tuple[list[list], list[str]]:
    """The ``--image`` grid: the memorized training images, the memorized prompts' first
    generations before and after, one ordinary generation per digit before and after."""
    from neurolens.evals.data import digits_16
    images = result["_images"]
    train, _ = digits_16()
    mem_rows, _ = load_sets(prompts_dir)
    k, n = len(MEMORIZED_SEEDS), ORDINARY_SEEDS   # the first seed of each prompt
    rows = [[train[r["image_index"]][..., None] for r in mem_rows],
            list(images["memorized_before"][::k]), list(images["memorized_after"][::k]),
            list(images["before"][::n]), list(images["after"][::n])]
    return rows, ["memorized training images", "memorized prompts before",
                  "memorized prompts after", "ordinary digits 0-9 before",
                  "ordinary digits 0-9 after"]


def _register() -> None:
    from neurolens.evals.experiments import Experiment, register
    from neurolens.resources import DEMO_DIFFUSION, model_path

    def run(dm, *, limit=None, log=print, prompts_dir=None):
        return reproduce(dm, log=log, prompts_dir=Path(prompts_dir) if prompts_dir else None)
    register(Experiment("memorization", "diffusion", run, format_table,
                        default_model=lambda: model_path(DEMO_DIFFUSION),
                        missing_hint="train it with `python training/train_diffusion.py` in a "
                                     "source checkout",
                        image_rows=image_rows))


_register()
