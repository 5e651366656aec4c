"""Where the app keeps what outlives a session: its settings (recent models) and the autosave
a crash or kill leaves behind.

By default both live in the user's places (``QSettings("neurolens", "neurolens")`` and the
platform's user data folder). With ``NEUROLENS_SETTINGS_DIR`` set, both go to that folder
instead: the tests and the benchmark set it (subprocesses inherit it), so scripted windows never
read or overwrite the user's recent models or autosave.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSettings

SETTINGS_DIR_ENV = "NEUROLENS_SETTINGS_DIR"


def settings_dir() -> Path | None:
    """The folder ``NEUROLENS_SETTINGS_DIR`` names, or None (the user's own places)."""
    d = os.environ.get(SETTINGS_DIR_ENV)
    return Path(d) if d else None


def user_settings() -> QSettings:
    d = settings_dir()
    if d is None:
        return QSettings("neurolens", "neurolens")
    return QSettings(str(d / "neurolens.ini"), QSettings.Format.IniFormat)


def autosave_file() -> Path:
    d = settings_dir()
    if d is None:
        from platformdirs import user_data_dir
        d = Path(user_data_dir("neurolens", "neurolens"))
    return d / "autosave.neurolens.json"
