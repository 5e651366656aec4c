"""Memorization metrics and the ``neurolens reproduce memorization`` protocol on the demo
diffusion model.

- memorized prompts: normalised correlation (Pearson) of each generation with the prompt's
  training image, averaged over several seeds, before and after the edit;
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
    a = a.reshape(-1).astype(np.float64) - a.mean()
    b = b.reshape(-1).astype(np.float64) - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


@dataclass
class DigitClassifier:
    model: object

    @classmethod
    def fit(cls) -> "DigitClassifier":
        from sklearn.linear_model import LogisticRegression

        from neurolens.demo.train_diffusion import digits_16
        x, y = digits_16()
        clf = LogisticRegression(max_iter=2000, C=0.5)
        clf.fit(x.reshape(len(x), -1), y)
        return cls(clf)

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = images[..., 0] if images.ndim == 4 else images
        return self.model.predict(x.reshape(len(x), -1))


MEMORIZED_SEEDS = (0, 1, 2)   # generations per memorized prompt (similarity is their mean)
ORDINARY_SEEDS = 8            # generations per ordinary prompt (accuracy, diversity)


def memorized_similarity(dm, rows: list[dict], edits=None, seeds=MEMORIZED_SEEDS, steps=20,
                         guidance=3.0, images: list | None = None) -> list[float]:
    """Mean correlation of each prompt's generations (one per seed) with its training image;
    ``images`` (a list) receives the generations."""
    from neurolens.demo.train_diffusion import digits_16
    imgs, _ = digits_16()
    prompts = [r["prompt"] for r in rows for _ in seeds]
    sd = [1000 * s + i for i, r in enumerate(rows) for s in seeds]
    out = dm.generate(prompts, edits=edits, steps=steps, guidance=guidance, seed=sd).images
    if images is not None:
        images.append(out)
    sims = []
    for i, r in enumerate(rows):
        g = out[i * len(seeds):(i + 1) * len(seeds), ..., 0]
        sims.append(float(np.mean([correlation(x, imgs[r["image_index"]]) for x in g])))
    return sims


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


RHO_SWEEP = (0.01, 0.02, 0.05, 0.1)


def _masks_edit(masks: dict) -> "object":
    from neurolens.spec.edits import EditSet, MaskWeights
    return EditSet([MaskWeights(s, m.astype(np.uint8)) for s, m in masks.items() if m.any()])


def reproduce(dm, *, steps: int = 20, guidance: float = 3.0, rho: float = mz.RHO,
              tau: int = mz.TAU, sweep=RHO_SWEEP, log=print, prompts_dir=None) -> dict:
    t0 = time.perf_counter()
    mem, ordi = load_sets(prompts_dir)
    ordinary = [r for r in ordi if r["split"] == "eval"]
    base_prompts = [r["prompt"] for r in ordi if r["split"] == "probe"]
    set_a = [r for r in mem if r["split"] == "A"]
    set_b = [r for r in mem if r["split"] == "B"]
    clf = DigitClassifier.fit()
    kw = {"steps": steps, "guidance": guidance}
    log(f"baseline: {len(mem)} memorized prompts, {len(ordinary)} ordinary prompts")
    mem_img0: list = []
    sim0 = memorized_similarity(dm, mem, images=mem_img0, **kw)
    q0 = ordinary_quality(dm, ordinary, clf, **kw)
    log(f"column norms (first {tau} steps): base set, memorized subsets A and B, all memorized")
    nb = mz.column_norms(dm, base_prompts, tau=tau, seed=10_000, **kw)
    na = mz.column_norms(dm, [r["prompt"] for r in set_a], tau=tau, **kw)
    nbb = mz.column_norms(dm, [r["prompt"] for r in set_b], tau=tau, **kw)
    nall = mz.column_norms(dm, [r["prompt"] for r in mem], tau=tau, **kw)
    m0, acc0 = float(np.mean(sim0)), q0["accuracy"]
    rows = []
    images_after = mem_after = None
    for r_ in sorted(set(sweep) | {rho}):
        masks = mz.masks_from_norms(dm, nall, nb, rho=r_, tau=tau)
        edits = _masks_edit(masks)
        mem_img1: list = []
        sim1 = memorized_similarity(dm, mem, edits=edits, images=mem_img1, **kw)
        q1 = ordinary_quality(dm, ordinary, clf, edits=edits, **kw)
        ma, mb = (mz.masks_from_norms(dm, n, nb, rho=r_, tau=tau) for n in (na, nbb))
        sim_b = memorized_similarity(dm, set_b, edits=_masks_edit(ma), **kw)
        n_del = sum(int(m.sum()) for m in masks.values())
        total = sum(m.size for m in masks.values())
        row = {"rho": r_, "weights_deleted": n_del, "fraction": round(n_del / total, 5),
               "similarity_after": round(float(np.mean(sim1)), 4),
               "similarity_ratio": round(float(np.mean(sim1)) / m0 if m0 else 0.0, 4),
               "accuracy_after": round(q1["accuracy"], 4),
               "accuracy_ratio": round(q1["accuracy"] / acc0 if acc0 else 0.0, 4),
               "diversity_after": round(q1["diversity"], 4),
               "iou_A_B": round(mz.iou(ma, mb), 4),
               "transfer_A_to_B_after": round(float(np.mean(sim_b)), 4),
               "per_prompt_after": [round(x, 3) for x in sim1],
               "per_site": {dm.aliases()[s]: int(m.sum()) for s, m in masks.items()}}
        row["meets_targets"] = (row["similarity_ratio"] <= TARGETS["similarity_ratio_max"]
                                and row["accuracy_ratio"] >= TARGETS["accuracy_ratio_min"])
        log(f"rho {r_:.0%}: {n_del} weights ({row['fraction']:.2%}); memorized similarity "
            f"{m0:.3f} -> {row['similarity_after']:.3f}; accuracy {acc0:.2f} -> "
            f"{row['accuracy_after']:.2f}; IoU(A, B) {row['iou_A_B']:.3f}")
        rows.append(row)
        if abs(r_ - rho) < 1e-12:
            images_after = q1["images"]
            mem_after = mem_img1[0]
    head = next(r_ for r_ in rows if abs(r_["rho"] - rho) < 1e-12)
    sim_b0 = [s for s, r in zip(sim0, mem) if r["split"] == "B"]
    result = {
        "experiment": "memorization", "model": dm.name_or_path, "steps": steps,
        "guidance": guidance, "rho": rho, "tau": tau,
        "memorized_similarity": {"before": round(m0, 4), "after": head["similarity_after"],
                                 "ratio": head["similarity_ratio"],
                                 "per_prompt_before": [round(s, 3) for s in sim0],
                                 "per_prompt_after": head["per_prompt_after"]},
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
        "transfer_A_to_B": {"before": round(float(np.mean(sim_b0)), 4),
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
    ms, o = r["memorized_similarity"], r["ordinary"]
    lines = [f"memorization subspace (rho {r['rho']:g}, tau {r['tau']}): "
             f"{r['mask']['weights_deleted']} of {r['mask']['ffn_out_weights']} FFN output "
             f"weights deleted ({r['mask']['fraction']:.2%})", "",
             f"{'metric':38s} {'before':>8s} {'after':>8s} {'relative':>9s}   paper",
             f"{'memorized: similarity to train image':38s} {ms['before']:8.3f} "
             f"{ms['after']:8.3f} {ms['ratio']:9.3f}   {PAPER['similarity_drop']}",
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
             "", "rho sweep (same masks procedure, tau fixed):",
             f"{'rho':>6s} {'deleted':>9s} {'mem. sim.':>10s} {'relative':>9s} "
             f"{'accuracy':>9s} {'relative':>9s} {'IoU(A,B)':>9s} {'targets':>8s}"]
    for w in r.get("sweep", []):
        lines.append(f"{w['rho']:6.0%} {w['fraction']:9.2%} {w['similarity_after']:10.3f} "
                     f"{w['similarity_ratio']:9.3f} {w['accuracy_after']:9.3f} "
                     f"{w['accuracy_ratio']:9.3f} {w['iou_A_B']:9.3f} "
                     f"{'met' if w['meets_targets'] else '-':>8s}")
    return "\n".join(lines)
