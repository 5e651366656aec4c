"""Qt-free presenters: what the window's views show, computed from the stores, the prompt list
and the worker's results (arrays, labels and text). Nothing here imports Qt, so all of it is
tested without a display (tests/test_gui_presenters.py)."""
