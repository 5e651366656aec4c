"""``neurolens bench``: what neurolens adds over the model's own cost, measured side by side.

Every case times its subject and its reference alternately in the same process (A, B, A, B, ...)
and reports the medians and their ratio against a budget. ``--quick`` shrinks every size so the
test suite can keep this code working; its numbers mean nothing.

One module per case under :mod:`neurolens.bench.cases`; the cases that measure a fresh process
(the large capture's memory, the GUI's event loop) run their module as
``python -m neurolens.bench.cases.<case> ARGS`` and read one JSON line back. Importing this
package loads no torch (the GUI probe must set the process up before torch loads).
"""

from __future__ import annotations

from neurolens.bench.measure import Case, alternate, check
from neurolens.bench.models import load_demo, random_gated, random_gpt2
from neurolens.bench.report import fmt_case, machine, table
from neurolens.bench.runner import run

#: the name the tests used before the split (tests/test_methods.py)
_random_gated = random_gated

__all__ = ["Case", "alternate", "check", "fmt_case", "load_demo", "machine", "random_gated",
           "random_gpt2", "run", "table"]
