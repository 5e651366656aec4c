"""First start on a plain Linux desktop: a missing xcb library gives one line and exit code 2
before Qt starts (neurolens.gui.platform_check), instead of Qt's abort naming one package."""

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from neurolens.gui import app, platform_check as pc

LDD_CURSOR_MISSING = """\
\tlinux-vdso.so.1 (0x00007ffc3b5f2000)
\tlibQt6XcbQpa.so.6 => /opt/PySide6/Qt/plugins/platforms/../../lib/libQt6XcbQpa.so.6 (0x7f0)
\tlibGL.so.1 => /lib/x86_64-linux-gnu/libGL.so.1 (0x00007f2d3c1a0000)
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => /lib/x86_64-linux-gnu/libxcb-icccm.so.4 (0x00007f2d3c190000)
\tlibxcb-cursor.so.0 => not found
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2d3ba00000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f2d3c200000)
"""


@pytest.fixture
def x11_desktop(monkeypatch):
    """A Linux X11 session with no platform chosen, and an xcb plugin to check."""
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(pc.sys, "platform", "linux")
    monkeypatch.setattr(pc, "xcb_plugin", lambda: Path("/opt/PySide6/Qt/plugins/platforms/"
                                                         "libqxcb.so"))
    monkeypatch.setattr(pc.shutil, "which", lambda name: "/usr/bin/ldd")


def test_missing_xcb_cursor_gives_one_line_and_exit_code_2(x11_desktop, monkeypatch, capsys):
    monkeypatch.setattr(pc, "_ldd_output", lambda lib, ldd: LDD_CURSOR_MISSING)
    assert app.run_gui(None) == 2  # before any window: the test would hang on one otherwise
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("neurolens: error: ")
    assert "missing libxcb-cursor.so.0;" in line  # named once, and only the missing one
    assert "libxcb-icccm" not in line
    assert "apt-get install libxcb-cursor0." in line
    assert "neurolens gui --screenshot out.png" in line and "QT_QPA_PLATFORM=offscreen" in line


def test_the_gui_command_exits_2(x11_desktop, monkeypatch, capsys):
    monkeypatch.setattr(pc, "_ldd_output", lambda lib, ldd: LDD_CURSOR_MISSING)
    from neurolens.cli import main
    assert main(["gui"]) == 2
    assert main([]) == 2  # plain `neurolens` opens the GUI
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("apt-get install libxcb-cursor0" in x for x in err)


def test_every_missing_file_and_its_package_in_one_line(x11_desktop, monkeypatch):
    out = LDD_CURSOR_MISSING + ("\tlibxcb-icccm.so.4 => not found\n"
                                "\tlibxcb-keysyms.so.1 => not found\n"
                                "\tlibfoo-unknown.so.3 => not found\n")
    monkeypatch.setattr(pc, "_ldd_output", lambda lib, ldd: out)
    msg = pc.check()
    assert "\n" not in msg
    assert ("missing libxcb-cursor.so.0, libxcb-icccm.so.4, libxcb-keysyms.so.1, "
            "libfoo-unknown.so.3;") in msg
    assert "apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1" in msg
    assert "the packages that provide libfoo-unknown.so.3" in msg


def test_without_ldd_the_elf_needed_entries_are_loaded_with_ctypes(monkeypatch):
    plugin = pc.xcb_plugin()
    if plugin is None:
        pytest.skip("this PySide6 has no xcb plugin")
    real = ctypes.CDLL

    def cdll(name, *a, **k):
        if name == "libxcb-cursor.so.0":
            raise OSError("libxcb-cursor.so.0: cannot open shared object file: "
                          "No such file or directory")
        return real(name, *a, **k)

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    monkeypatch.setattr(pc.shutil, "which", lambda name: None)
    missing = pc.missing_libraries()
    assert "libxcb-cursor.so.0" in missing
    assert not any(m.startswith("libQt6") for m in missing)  # Qt's own come from the RUNPATH


def test_xcb_is_checked_only_where_it_will_be_used():
    used = pc.xcb_will_be_used
    assert used({}, "linux")
    assert used({"QT_QPA_PLATFORM": "xcb"}, "linux")
    assert used({"QT_QPA_PLATFORM": "xcb:display=:1"}, "linux")
    assert not used({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert not used({"QT_QPA_PLATFORM": "wayland"}, "linux")
    assert not used({"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert used({"XDG_SESSION_TYPE": "x11", "DISPLAY": ":0"}, "linux")
    assert not used({}, "darwin") and not used({}, "win32")


def test_offscreen_skips_the_check(monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")

    def boom(*a, **k):
        raise AssertionError("resolved libraries although xcb is not used")

    monkeypatch.setattr(pc, "missing_libraries", boom)
    assert pc.check() is None
    assert app._platform_problem(None) is None


def test_a_screenshot_needs_no_window(x11_desktop, monkeypatch):
    """--screenshot with a display but an unloadable xcb plugin goes offscreen (as the message
    promises) instead of failing."""
    monkeypatch.setattr(pc, "_ldd_output", lambda lib, ldd: LDD_CURSOR_MISSING)
    assert app._platform_problem("out.png") is None
    assert pc.os.environ["QT_QPA_PLATFORM"] == "offscreen"


def test_on_this_machine_the_check_agrees_with_the_loader(monkeypatch):
    """Here (CI, the dev machine): with xcb, the check passes exactly when nothing is missing;
    offscreen, it is skipped."""
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
    msg = pc.check()
    if not sys.platform.startswith("linux") or pc.xcb_plugin() is None:
        assert msg is None
        return
    missing = pc.missing_libraries()
    assert (msg is None) == (not missing)
    if msg:
        assert all(m in msg for m in missing)


def test_the_check_loads_no_qt():
    code = ("import sys, neurolens.gui.app, neurolens.gui.platform_check as pc; pc.check();"
            "pc.missing_libraries();"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6')];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "xcb"})
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(not shutil.which("ldd") or pc.xcb_plugin() is None,
                    reason="needs ldd and PySide6's xcb plugin")
def test_real_ldd_on_a_plugin_whose_dependency_is_missing(tmp_path):
    """A copy of the real libqxcb.so whose DT_NEEDED libxcb-cursor.so.0 is renamed to a file
    that exists nowhere: the real ldd reports it, the ELF/ctypes path agrees."""
    plugin = pc.xcb_plugin()
    qt = plugin.parents[2]
    (tmp_path / "Qt" / "plugins" / "platforms").mkdir(parents=True)
    (tmp_path / "Qt" / "lib").symlink_to(qt / "lib")  # the plugin's RUNPATH: $ORIGIN/../../lib
    data = plugin.read_bytes()
    assert data.count(b"libxcb-cursor.so.0\0") == 1
    copy = tmp_path / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    copy.write_bytes(data.replace(b"libxcb-cursor.so.0\0", b"libxcb-cursor.so.7\0"))

    needed, runpath = pc.elf_needed(copy)
    assert "libxcb-cursor.so.7" in needed and "libQt6XcbQpa.so.6" in needed
    assert runpath == ["$ORIGIN/../../lib"]
    out = pc._ldd_output(copy, shutil.which("ldd"))
    assert "libxcb-cursor.so.7 => not found" in out
    missing = pc.missing_libraries(copy)
    assert "libxcb-cursor.so.7" in missing
    assert set(missing) - {"libxcb-cursor.so.7"} == set(pc.missing_libraries(plugin))
    assert set(pc._ctypes_missing(copy)) == set(missing)
    msg = pc.message(missing)
    assert "libxcb-cursor.so.7" in msg and "\n" not in msg


def _xcb_libs_here():
    if not shutil.which("ldd") or pc.xcb_plugin() is None:
        return None
    found, missing = pc.xcb_libraries_on_this_machine()
    return None if missing else found


@pytest.mark.skipif(_xcb_libs_here() is None,
                    reason="needs ldd, PySide6's xcb plugin and the xcb libraries")
def test_the_bundle_check_finds_an_xcb_library_outside_the_bundle(tmp_path):
    """packaging/check_bundle_xcb.py on a bundle laid out like PyInstaller's (_internal/PySide6/
    Qt/...): passes with the xcb libraries next to Qt's, fails when one resolves to the system."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "packaging"))
    try:
        import check_bundle_xcb
    finally:
        sys.path.pop(0)
    qt = pc.xcb_plugin().parents[2]
    bundle = tmp_path / "neurolens"
    bqt = bundle / "_internal" / "PySide6" / "Qt"
    (bqt / "plugins" / "platforms").mkdir(parents=True)
    shutil.copy(qt / "plugins" / "platforms" / "libqxcb.so", bqt / "plugins" / "platforms")
    (bqt / "lib").mkdir()
    for f in (qt / "lib").iterdir():
        (bqt / "lib" / f.name).symlink_to(f)
    for name, path in _xcb_libs_here().items():
        shutil.copy(path, bqt / "lib" / name)
    bad, report = check_bundle_xcb.problems(bundle)
    assert bad == [], bad
    assert sum(" bundle: " in line for line in report) == len(pc.BUNDLED_XCB)

    (bqt / "lib" / "libxcb-cursor.so.0").unlink()
    bad, _ = check_bundle_xcb.problems(bundle)
    assert len(bad) == 1 and bad[0].startswith("libxcb-cursor.so.0 resolves outside the bundle")
    assert check_bundle_xcb.main([str(bundle)]) == 1
