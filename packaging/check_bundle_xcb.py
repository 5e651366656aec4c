"""Check that a frozen bundle's Qt xcb plugin loads its xcb libraries from the bundle.

    python packaging/check_bundle_xcb.py [BUNDLE]      (default: build/dist/neurolens)

Runs ``ldd`` on the bundled ``PySide6/Qt/plugins/platforms/libqxcb.so`` with LD_LIBRARY_PATH
and LD_PRELOAD removed (what a desktop launcher gives the app) and fails (exit 1) if any
dependency is "not found", or if one of the libraries the bundle must carry (BUNDLED_XCB in
neurolens/gui/platform_check.py: libxcb-cursor, -icccm, -keysyms, ...) resolves outside the
bundle. Linux only. packaging/build.sh runs it after every build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from neurolens.gui.platform_check import BUNDLED_XCB, ldd_paths  # noqa: E402


def problems(bundle: Path) -> tuple[list[str], list[str]]:
    """(problems, report lines) for the bundle folder."""
    bundle = Path(bundle).resolve()
    plugins = sorted(bundle.glob("**/PySide6/Qt/plugins/platforms/libqxcb.so"))
    if not plugins:
        return [f"no PySide6/Qt/plugins/platforms/libqxcb.so under {bundle}"], []
    plugin = plugins[0]
    ldd = shutil.which("ldd")
    if ldd is None:
        return ["ldd is not installed"], []
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
    r = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, env=env, timeout=60)
    paths = ldd_paths(r.stdout + r.stderr)
    bad, report = [], [f"ldd {plugin.relative_to(bundle)} (clean LD_LIBRARY_PATH):"]
    if r.returncode != 0 or not paths:
        bad.append(f"ldd failed: {(r.stdout + r.stderr).strip()[-500:]}")
    for name, path in paths.items():
        if path is None:
            bad.append(f"{name}: not found")
    for name in BUNDLED_XCB:
        path = paths.get(name)
        if name not in paths:
            bad.append(f"{name}: not a dependency of the plugin (update BUNDLED_XCB)")
            continue
        if path is None:
            continue  # reported above
        real = Path(path).resolve()
        inside = real.is_relative_to(bundle) and Path(os.path.normpath(path)).is_relative_to(
            bundle)
        where = real.relative_to(bundle) if real.is_relative_to(bundle) else real
        report.append(f"  {name:26} {'bundle' if inside else 'OUTSIDE'}: {where}")
        if not inside:
            bad.append(f"{name} resolves outside the bundle: {path}")
    return bad, report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    bundle = Path(argv[0] if argv else ROOT / "build" / "dist" / "neurolens")
    if not sys.platform.startswith("linux"):
        print("check_bundle_xcb: not Linux, nothing to check")
        return 0
    bad, report = problems(bundle)
    print("\n".join(report))
    if bad:
        print(f"check_bundle_xcb: FAILED ({len(bad)}):", *bad, sep="\n  ", file=sys.stderr)
        return 1
    print(f"check_bundle_xcb: OK: the {len(BUNDLED_XCB)} xcb libraries resolve inside the "
          f"bundle, no dependency is missing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
