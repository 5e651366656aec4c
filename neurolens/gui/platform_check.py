"""Can Qt's xcb platform plugin load? Checked before the QApplication exists (no Qt here).

On a fresh Linux desktop Qt's X11 plugin (``PySide6/Qt/plugins/platforms/libqxcb.so`` and the
``libQt6XcbQpa`` it links) needs a handful of xcb libraries the system may lack
(``libxcb-cursor0``, ``libxcb-icccm4``, ``libxcb-keysyms1``, ...). Qt then aborts with a message
that names one package at a time. This module finds every missing file at once by locating the
plugin (``importlib.util.find_spec``, without importing PySide6) and resolving its shared-library
dependencies with ``ldd``, or, where ``ldd`` is absent, by reading the ELF ``DT_NEEDED`` entries
and loading the non-Qt ones with ctypes. ``check()`` returns one line naming the missing files
and the Debian/Ubuntu packages that provide them, or None.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

# library file (soname) -> Debian/Ubuntu package that ships it. The xcb plugin's DT_NEEDED
# lists (PySide6 6.6-6.11: libqxcb.so, libQt6XcbQpa.so.6, libQt6Gui.so.6, libQt6DBus.so.6)
# plus what those libraries need in turn.
PACKAGES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xinput.so.0": "libxcb-xinput0",
    "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libXau.so.6": "libxau6",
    "libXdmcp.so.6": "libxdmcp6",
    "libGL.so.1": "libgl1",
    "libGLX.so.0": "libglx0",
    "libGLdispatch.so.0": "libglvnd0",
    "libEGL.so.1": "libegl1",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libz.so.1": "zlib1g",
    "libzstd.so.1": "libzstd1",
    "libexpat.so.1": "libexpat1",
    "libpng16.so.16": "libpng16-16",
}

# The libraries the xcb plugin needs that a desktop with an X server may still lack (the
# xcb-util family and xkbcommon's X11 half, not libxcb/libX11 themselves, which every X client
# uses, nor the GL/font stack, which must come from the system). The frozen bundle carries
# these next to Qt's own libraries (packaging/neurolens.spec).
BUNDLED_XCB: tuple[str, ...] = (
    "libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-image.so.0",
    "libxcb-render-util.so.0", "libxcb-util.so.1", "libxkbcommon-x11.so.0", "libxcb-xkb.so.1",
)

EXIT_CODE = 2


def xcb_will_be_used(environ: dict | None = None, platform: str | None = None) -> bool:
    """True when a QApplication would start Qt's xcb (X11) platform plugin: Linux, and
    QT_QPA_PLATFORM unset or naming xcb first. Other platforms (offscreen, wayland, vnc, ...) do
    not load it; neither does a Wayland session where Qt picks its wayland plugin by itself."""
    env = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux"):
        return False
    qpa = env.get("QT_QPA_PLATFORM", "").strip()
    if qpa:
        return qpa.startswith("xcb")
    # unset: Qt follows the session type; in a Wayland session it uses the wayland plugin
    return not (env.get("XDG_SESSION_TYPE") == "wayland" and env.get("WAYLAND_DISPLAY"))


def pyside_dir() -> Path | None:
    """The PySide6 package folder, found without importing it (frozen bundles included)."""
    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        spec = None
    dirs = []
    if spec is not None:
        dirs += [Path(p) for p in (spec.submodule_search_locations or [])]
        if spec.origin:
            dirs.append(Path(spec.origin).parent)
    if getattr(sys, "_MEIPASS", None):
        dirs.append(Path(sys._MEIPASS) / "PySide6")
    for d in dirs:
        if (d / "Qt").is_dir():
            return d
    return None


def xcb_plugin() -> Path | None:
    """Path of Qt's libqxcb.so, or None where this PySide6 has none."""
    d = pyside_dir()
    if d is None:
        return None
    p = d / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return p if p.is_file() else None


def _ldd_output(lib: Path, ldd: str) -> str:
    """What ``ldd`` prints for ``lib``: every dependency, transitively, as the loader would
    resolve it in this environment (LD_LIBRARY_PATH included)."""
    r = subprocess.run([ldd, str(lib)], capture_output=True, text=True, timeout=30)
    return r.stdout + r.stderr


def parse_ldd(text: str) -> list[str]:
    """Library files that ldd output lists as ``name => not found``, without repeats."""
    return [name for name, path in ldd_paths(text).items() if path is None]


def ldd_paths(text: str) -> dict[str, str | None]:
    """``{library file: the path ldd resolved it to, or None for "not found"}``, in ldd's
    order ("not found" anywhere wins)."""
    out: dict[str, str | None] = {}
    for m in re.finditer(r"^\s*(\S+)\s+=>\s+(not found|\S+)", text, re.M):
        name, path = m.group(1), None if m.group(2) == "not found" else m.group(2)
        if name not in out or path is None:
            out[name] = path
    return out


def elf_needed(path: Path) -> tuple[list[str], list[str]]:
    """(DT_NEEDED entries, DT_RUNPATH/DT_RPATH folders) of an ELF shared library."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    is64, end = data[4] == 2, "<" if data[5] == 1 else ">"
    if is64:
        phoff, = struct.unpack_from(end + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x36)
        ph, dyn_fmt = end + "IIQQQQQQ", end + "qQ"
    else:
        phoff, = struct.unpack_from(end + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x2A)
        ph, dyn_fmt = end + "IIIIIIII", end + "iI"
    loads, dynamic = [], None
    for i in range(phnum):
        f = struct.unpack_from(ph, data, phoff + i * phentsize)
        if is64:
            p_type, p_offset, p_vaddr, p_filesz = f[0], f[2], f[3], f[5]
        else:
            p_type, p_offset, p_vaddr, p_filesz = f[0], f[1], f[2], f[4]
        if p_type == 1:  # PT_LOAD
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:  # PT_DYNAMIC
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return [], []
    entries, step = [], struct.calcsize(dyn_fmt)
    for off in range(dynamic[0], dynamic[0] + dynamic[1], step):
        tag, val = struct.unpack_from(dyn_fmt, data, off)
        if tag == 0:  # DT_NULL
            break
        entries.append((tag, val))
    strtab = next((v for t, v in entries if t == 5), None)  # DT_STRTAB (a virtual address)
    if strtab is None:
        return [], []
    base = next((o + strtab - va for va, o, sz in loads if va <= strtab < va + sz), strtab)

    def string(off: int) -> str:
        s = base + off
        return data[s:data.index(b"\0", s)].decode()

    needed = [string(v) for t, v in entries if t == 1]  # DT_NEEDED
    paths = [p for t, v in entries if t in (15, 29) for p in string(v).split(":") if p]
    return needed, paths


def _ctypes_missing(lib: Path) -> list[str]:
    """Without ldd: follow DT_NEEDED through the libraries found on the RUNPATH (Qt's own) and
    load each other one with ctypes; a failed load names the file the loader could not find."""
    import ctypes
    missing: list[str] = []
    seen: set[str] = set()
    todo = [Path(lib)]
    while todo:
        cur = todo.pop(0)
        needed, runpath = elf_needed(cur)
        dirs = [Path(p.replace("$ORIGIN", str(cur.parent))) for p in runpath]
        for name in needed:
            if name in seen:
                continue
            seen.add(name)
            local = next((d / name for d in dirs if (d / name).is_file()), None)
            if local is not None:
                todo.append(local)
                continue
            try:
                ctypes.CDLL(name)
            except OSError as e:
                m = re.match(r"\s*(\S+?): cannot open shared object file", str(e))
                miss = m.group(1) if m else name
                if miss not in missing:
                    missing.append(miss)
    return missing


def missing_libraries(lib: Path | None = None, ldd: str | None = None) -> list[str]:
    """Library files the xcb plugin (or ``lib``) needs that the dynamic loader cannot find."""
    lib = xcb_plugin() if lib is None else Path(lib)
    if lib is None:
        return []
    ldd = shutil.which("ldd") if ldd is None else ldd
    if ldd:
        try:
            return parse_ldd(_ldd_output(lib, ldd))
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return _ctypes_missing(lib)
    except (OSError, ValueError, struct.error):
        return []  # cannot tell: let Qt try


def message(missing: list[str]) -> str:
    """The one line that names the missing files and the packages that provide them."""
    pkgs: list[str] = []
    for f in missing:
        p = PACKAGES.get(f)
        if p and p not in pkgs:
            pkgs.append(p)
    unknown = [f for f in missing if f not in PACKAGES]
    it = "them" if len(missing) > 1 else "it"
    fix = f"install {it} with: sudo apt-get install {' '.join(pkgs)}" if pkgs else ""
    if unknown and pkgs:
        fix += f" (and the packages that provide {', '.join(unknown)})"
    elif unknown:
        fix = f"install the packages that provide {', '.join(unknown)}"
    return (f"neurolens: error: Qt's X11 (xcb) platform plugin cannot load: missing "
            f"{', '.join(missing)}; {fix}. "
            f"Without a window, `neurolens gui --screenshot out.png` and "
            f"QT_QPA_PLATFORM=offscreen still work.")


def check(environ: dict | None = None, platform: str | None = None) -> str | None:
    """None when a window can open as far as libraries go (or xcb is not going to be used);
    otherwise the one-line error message."""
    if not xcb_will_be_used(environ, platform):
        return None
    missing = missing_libraries()
    return message(missing) if missing else None


def xcb_libraries_on_this_machine() -> tuple[dict[str, str], dict[str, str]]:
    """For bundling (packaging/neurolens.spec): ``({file: path} of the BUNDLED_XCB libraries
    the loader finds here for Qt's xcb plugin, {file: package} of those it cannot find})``."""
    plugin, ldd = xcb_plugin(), shutil.which("ldd")
    if plugin is None or ldd is None:
        raise RuntimeError("needs PySide6's xcb plugin (libqxcb.so) and ldd")
    paths = ldd_paths(_ldd_output(plugin, ldd))
    found = {f: paths[f] for f in BUNDLED_XCB if paths.get(f)}
    return found, {f: PACKAGES[f] for f in BUNDLED_XCB if f not in found}
