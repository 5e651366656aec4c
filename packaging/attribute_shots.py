"""Screenshots of the Attribute panel and the neuron dashboard, made by the app itself (offscreen)
on the demo model, driving it like a user.

    python packaging/attribute_shots.py OUT_DIR [MODEL]

1. attribute.png   "Compute: 47+38=" answer 85 against 75, corrupted "Compute: 47+28=":
                   attribution patching, the top 20 verified by exact patching (Attribution
                   tab: effect maps and the top-K table; the Attribute form on the right)
2. dashboard.png   the top neuron opened from the table: its effect in the inspector and its
                   corpus dashboard (top examples, histogram, density) from the shipped index
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme_shots import _window  # noqa: E402


def main(out_dir: str, model: str | None = None) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w, wait = _window()
    w.open_model(model)
    wait(lambda: w.model_info is not None)
    w.load_shipped_set("arithmetic", 8)
    w.prompt_edit.setPlainText("Compute: 47+38=")
    p = w.attribute_panel
    w.right_tabs.setCurrentWidget(p)
    p.answer.setText("85")
    p.contrast.setText("75")
    p.corruption.setCurrentText("corrupted prompt below")
    p.corrupt_text.setText("Compute: 47+28=")
    p.run_btn.click()
    wait(lambda: w.attribution.result is not None and not w.attribution.busy)
    p.verify_btn.click()
    wait(lambda: not w.attribution.busy)
    if w.errors:
        print(w.errors[-1], file=sys.stderr)
        return 1
    w.grab().save(str(out / "attribute.png"))
    w.attribute_results.click_row(0)
    wait(lambda: w.dashboard.state in ("shown", "missing", "error"))
    w.grab().save(str(out / "dashboard.png"))
    w.close()
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
