"""Check an exported folder against the in-app edited model it came from.

After :meth:`Model.export`, :func:`verify_export` reloads the folder and runs one prompt through
both: a language model compares the next-token logits and an 8-token greedy continuation, a
diffusion pipeline a 10-step image from seed 0. The export is right when they agree (the baked
edits equal the hooks, the sidecar's are re-applied on load).
"""

from __future__ import annotations

import numpy as np

#: largest logit (pixel) difference between the reloaded folder and the edited model that counts
#: as the same
TOLERANCE = 1e-4


def verify_export(model, folder, edits, prompt: str, plain_exact: bool = True) -> dict:
    """Reload ``folder`` and compare it with ``model`` under ``edits`` on ``prompt``.
    ``plain_exact``: whether the export baked every edit (plain transformers / diffusers then
    give the same output without neurolens). Returns the check's numbers ({} for no prompt)."""
    from neurolens.engine.loading import load
    if not prompt:
        return {}
    again = load(folder)
    if getattr(model, "kind", "") == "diffusion":
        a = again.generate(prompt, steps=10, seed=0).images
        b = model.generate(prompt, edits=edits, steps=10, seed=0).images
        diff = float(np.abs(a - b).max())
        return {"prompt": prompt, "max_abs_pixel_diff": diff, "same_output": diff < TOLERANCE,
                "output": "image (10 steps, seed 0)", "plain_transformers_exact": plain_exact}
    a = again.logits([prompt])[0]
    b = model.logits([prompt], edits=edits)[0]
    ga = again.generate(prompt, max_new_tokens=8)
    gb = model.generate(prompt, edits=edits, max_new_tokens=8)
    return {"prompt": prompt, "max_abs_logit_diff": float(np.abs(a - b).max()),
            "same_output": ga.token_ids == gb.token_ids, "output": ga.text,
            "plain_transformers_exact": plain_exact}
