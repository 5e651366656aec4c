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

import numpy as np

from neurolens.methods import memorization as mz

PAPER = {"similarity_drop": "memorized generations no longer match their training images "
                            "(SSCD similarity falls below the memorization threshold)",
         "quality": "CLIP score / FID of ordinary prompts about unchanged",
         "iou": "masks from different memorized sets overlap strongly (shared subspace)"}
TARGETS = {"similarity_ratio_max": 0.5, "accuracy_ratio_min": 0.9}


def load_sets(folder=None) -> tuple[list[dict], list[dict]]:
    from neurolens.resources import prompts_dir
    d = prompts_dir() if folder is None else folder
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


def memorized_similarity(dm, rows: list[dict], edits=None, seeds=(0, 1, 2), steps=20,
                         guidance=3.0) -> list[float]:
    from neurolens.demo.train_diffusion import digits_16
    imgs, _ = digits_16()
    prompts = [r["prompt"] for r in rows for _ in seeds]
    sd = [1000 * s + i for i, r in enumerate(rows) for s in seeds]
    out = dm.generate(prompts, edits=edits, steps=steps, guidance=guidance, seed=sd).images
    sims = []
    for i, r in enumerate(rows):
        g = out[i * len(seeds):(i + 1) * len(seeds), ..., 0]
        sims.append(float(np.mean([correlation(x, imgs[r["image_index"]]) for x in g])))
    return sims


def ordinary_quality(dm, rows: list[dict], clf: DigitClassifier, edits=None, n_seeds=8,
                     steps=20, guidance=3.0) -> dict:
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


def reproduce(dm, *, steps: int = 20, guidance: float = 3.0, rho: float = mz.RHO,
              tau: int = mz.TAU, log=print) -> dict:
    t0 = time.perf_counter()
    mem, ordi = load_sets()
    ordinary = [r for r in ordi if r["split"] == "eval"]
    base_prompts = [r["prompt"] for r in ordi if r["split"] == "probe"]
    set_a = [r for r in mem if r["split"] == "A"]
    set_b = [r for r in mem if r["split"] == "B"]
    clf = DigitClassifier.fit()
    log(f"baseline: {len(mem)} memorized prompts, {len(ordinary)} ordinary prompts")
    sim0 = memorized_similarity(dm, mem, steps=steps, guidance=guidance)
    q0 = ordinary_quality(dm, ordinary, clf, steps=steps, guidance=guidance)
    log("fitting masks on memorized subset A, then subset B (same base set)")
    res_a = mz.find_subspace(dm, [r["prompt"] for r in set_a], base_prompts, rho=rho, tau=tau,
                             steps=steps, guidance=guidance)
    res_b = mz.find_subspace(dm, [r["prompt"] for r in set_b], base_prompts, rho=rho, tau=tau,
                             steps=steps, guidance=guidance, base_norms=res_a.base_norms)
    res_all = mz.find_subspace(dm, [r["prompt"] for r in mem], base_prompts, rho=rho, tau=tau,
                               steps=steps, guidance=guidance, base_norms=res_a.base_norms)
    iou = mz.iou(res_a.masks, res_b.masks)
    log(f"mask IoU(A, B) = {iou:.3f}; editing with the mask of all memorized prompts")
    sim1 = memorized_similarity(dm, mem, edits=res_all.edits, steps=steps, guidance=guidance)
    q1 = ordinary_quality(dm, ordinary, clf, edits=res_all.edits, steps=steps,
                          guidance=guidance)
    # transfer: the mask of A alone on the prompts of B (the shared-subspace claim)
    sim_b_by_a = memorized_similarity(dm, set_b, edits=res_a.edits, steps=steps,
                                      guidance=guidance)
    sim_b0 = [s for s, r in zip(sim0, mem) if r["split"] == "B"]
    m0, m1 = float(np.mean(sim0)), float(np.mean(sim1))
    result = {
        "experiment": "memorization", "model": dm.name_or_path, "steps": steps,
        "guidance": guidance, "rho": rho, "tau": tau,
        "memorized_similarity": {"before": round(m0, 4), "after": round(m1, 4),
                                 "ratio": round(m1 / m0 if m0 else 0.0, 4),
                                 "per_prompt_before": [round(s, 3) for s in sim0],
                                 "per_prompt_after": [round(s, 3) for s in sim1]},
        "ordinary": {"accuracy_before": round(q0["accuracy"], 4),
                     "accuracy_after": round(q1["accuracy"], 4),
                     "accuracy_ratio": round(q1["accuracy"] / q0["accuracy"]
                                             if q0["accuracy"] else 0.0, 4),
                     "diversity_before": round(q0["diversity"], 4),
                     "diversity_after": round(q1["diversity"], 4)},
        "mask": res_all.report,
        "mask_iou_A_B": round(iou, 4),
        "transfer_A_to_B": {"before": round(float(np.mean(sim_b0)), 4),
                            "after": round(float(np.mean(sim_b_by_a)), 4)},
        "paper": PAPER, "targets": TARGETS, "seconds": round(time.perf_counter() - t0, 1),
    }
    result["targets_met"] = {
        "similarity_halved": result["memorized_similarity"]["ratio"] <= 0.5,
        "accuracy_within_10pct": result["ordinary"]["accuracy_ratio"] >= 0.9,
    }
    result["_images"] = {"before": q0["images"], "after": q1["images"]}
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
                                     for k, v in r["targets_met"].items())]
    return "\n".join(lines)
