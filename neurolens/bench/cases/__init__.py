"""One module per benchmark case; each has ``case(...) -> Case | list[Case]``.

Not imported with the package: ``large_capture`` and ``gui`` also run as
``python -m neurolens.bench.cases.<case>`` in a fresh process (see their ``main``).
"""
