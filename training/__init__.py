"""Training scripts of the demo models (not part of the installed package).

Run from the repository root, as a script or a module:

    python training/train_lm.py --out resources/models/demo-lm
    python -m training.train_diffusion --out resources/models/demo-diffusion

They build on the installed ``neurolens``: the corpus and prompt sets come from
:mod:`neurolens.evals.corpus`, the diffusion architecture from :mod:`neurolens.testing`.
"""
