#!/usr/bin/env python3
"""Deliberate breaks: does the test suite catch them?

Each mutation replaces exact text in one source file of a scratch copy of the working tree, runs
the tests named for it there, and counts as *caught* when pytest reports a failing test (exit
status 1). The working tree is never touched. Before the mutations, the named tests run once on
the unmutated copy: a test that already fails cannot catch anything.

    python tools/mutation_check.py              # every mutation
    python tools/mutation_check.py --list       # names only
    python tools/mutation_check.py lens-no-centring kl-wrong-side
    python tools/mutation_check.py --check      # only: does each mutation still apply?

Exit status: 0 when every selected mutation is caught, 1 otherwise, 2 for bad input.
Keep the list in step with the code: ``tests/test_mutation_check.py`` fails when a mutation's
text no longer occurs exactly once in its file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str                                   # the behaviour it breaks, in words
    file: str                                   # relative to the repository root
    replace: tuple[tuple[str, str], ...]        # (old, new), each old exactly once, in order
    tests: tuple[str, ...]                      # pytest node ids or files


def M(name, what, file, replace, tests) -> Mutation:
    return Mutation(name, what, file, tuple(replace), tuple(tests))


P = "tests/test_protocols.py::"

MUTATIONS: list[Mutation] = [
    M("phi3-halves-swapped", "Phi-3's fused gate_up_proj: hook_pre reads the up half",
      "neurolens/engine/adapters.py",
      [('Native("mlp.gate_up_proj", part=(0, 2))', 'Native("mlp.gate_up_proj", part=(@, 2))'),
       ('Native("mlp.gate_up_proj", part=(1, 2))', 'Native("mlp.gate_up_proj", part=(0, 2))'),
       ('part=(@, 2)', 'part=(1, 2)')],
      ["tests/test_reference_sites.py::test_sites_read_the_hand_written_modules[phi3]",
       "tests/test_reference_sites.py::test_ffn_sites_recomputed_from_raw_weights[phi3]"]),
    M("decode-row-shifted", "tokens generated after the prompt are captured one position on",
      "neurolens/engine/runner.py",
      [("next_pos = plen.clone()", "next_pos = plen.clone() + 1")],
      ["tests/test_reference_sites.py::test_rows_streamed_while_generating_equal_one_plain_"
       "forward[llama-False]"]),
    M("padded-row-shifted", "left-padded prompts' rows are read one token to the left",
      "neurolens/engine/capture.py",
      [("flat = to_numpy(x[valid])", "flat = to_numpy(x[valid.roll(-1, 1)])")],
      ["tests/test_reference_sites.py::test_rows_streamed_while_generating_equal_one_plain_"
       "forward[gpt2-False]"]),
    M("kl-wrong-side", "compare's KL is KL(edited || baseline)",
      "neurolens/engine/compare.py",
      [("kl = (np.exp(lp) * (lp - lq))", "kl = (np.exp(lq) * (lq - lp))")],
      ["tests/test_reference_outputs.py::test_compare_metrics_equal_plain_transformers"]),
    M("p-edited-from-baseline", "compare's edited probabilities come from the baseline",
      "neurolens/engine/compare.py",
      [("pe = np.exp(lq[np.arange(n), tgt])", "pe = np.exp(lp[np.arange(n), tgt])")],
      ["tests/test_reference_outputs.py::test_compare_metrics_equal_plain_transformers"]),
    M("divergence-off-by-one", "the first divergence is reported one token late",
      "neurolens/engine/runner.py",
      [("        if x != y:\n            return i",
        "        if x != y:\n            return i + 1")],
      ["tests/test_reference_outputs.py::test_compare_metrics_equal_plain_transformers"]),
    M("lens-no-centring", "the logit lens skips the LayerNorm's centring",
      "neurolens/engine/lm.py",
      [("direction = direction - direction.mean()", "direction = direction")],
      ["tests/test_reference_outputs.py::test_logit_lens_follows_the_transformerlens_convention"]),
    M("lens-gemma-plain-weight", "the logit lens uses Gemma's stored norm weight, not 1 + w",
      "neurolens/engine/lm.py",
      [("scale = 1.0 + scale", "scale = scale")],
      ["tests/test_reference_outputs.py::test_logit_lens_follows_the_transformerlens_convention"
       "[gemma]"]),
    M("scale-baked-wrong-factor", "a scale edit is baked with factor**2",
      "neurolens/engine/interventions.py",
      [("t.reads.scale_inputs(op.neurons, op.factor)",
        "t.reads.scale_inputs(op.neurons, op.factor ** 2)")],
      ["tests/test_reference_outputs.py::test_bakeable_op_equals_hand_edited_weights"]),
    M("set-bias-wrong-sign", "a set edit folds its value into the bias with the wrong sign",
      "neurolens/engine/baking.py",
      [("bias += (self.w[:, j] * value).sum(1)", "bias -= (self.w[:, j] * value).sum(1)")],
      ["tests/test_reference_outputs.py::test_bakeable_op_equals_hand_edited_weights"]),
    M("fused-bake-wrong-half", "an edit of Phi-3's up half is baked into the gate half",
      "neurolens/engine/lm.py",
      [("off = part[0] * (out_dim // part[1]) if part else 0", "off = 0")],
      ["tests/test_reference_outputs.py::test_bakeable_op_equals_hand_edited_weights"]),
    M("scale-hook-wrong-factor", "a scale edit's hook multiplies by factor**2",
      "neurolens/engine/interventions.py",
      [("return cur * self.op.factor", "return cur * self.op.factor ** 2")],
      ["tests/test_reference_outputs.py::test_bakeable_op_equals_hand_edited_weights"]),
    M("other-guidance-half", "the diffusion capture keeps the unconditional half",
      "neurolens/engine/diffusion.py",
      [("            x = x[n:]\n", "            x = x[:n]\n")],
      ["tests/test_diffusion_reference.py::test_capture_per_step_equals_plain_pre_hook_cond_"
       "half"]),
    M("diffusion-max-for-mean", "the diffusion capture's mean over tokens is a max",
      "neurolens/engine/diffusion.py",
      [("            red = x.mean(1)\n", "            red = x.amax(1)\n")],
      ["tests/test_diffusion_reference.py::test_mean_is_over_spatial_tokens_not_channels_or_"
       "batch"]),
    M("diffusion-step-shifted", "diffusion rows are stored under the next step",
      "neurolens/engine/diffusion.py",
      [("rows[b], step=state.step)", "rows[b], step=state.step + 1)")],
      ["tests/test_diffusion_reference.py::test_capture_per_step_equals_plain_pre_hook_cond_"
       "half"]),
    M("autosave-debounced", "autosave waits for changes to stop (a steady stream never saves)",
      "neurolens/gui/controllers/sessions.py",
      [("        if not self.timer.isActive():\n            self.timer.start()\n",
        "        self.timer.start()\n")],
      ["tests/test_gui.py::test_autosave_comes_during_a_steady_stream_of_changes_not_after_it"]),
    M("autosave-every-change", "autosave writes on every change",
      "neurolens/gui/controllers/sessions.py",
      [("        if not self.timer.isActive():\n            self.timer.start()\n",
        "        if not self.timer.isActive():\n            self.timer.start()\n"
        "        self.autosave()\n")],
      ["tests/test_gui.py::test_autosave_comes_during_a_steady_stream_of_changes_not_after_it"]),
    M("gc-not-restored", "closing the window leaves automatic collection off",
      "neurolens/gui/main_window.py",
      [("        gc_policy.release(self, lambda: thread.isFinished() and "
        "pool.activeThreadCount() == 0)\n", "        pass\n")],
      ["tests/test_gui.py::test_closing_the_last_window_gives_the_interpreter_its_gc_back"]),
    M("gc-restored-before-worker-ends", "collection comes back while the worker thread runs",
      "neurolens/gui/main_window.py",
      [("        self.timer.stop()\n        self.thread.quit()\n",
        "        self.timer.stop()\n        gc_policy.release(self)\n"
        "        self.thread.quit()\n")],
      ["tests/test_gui.py::test_closing_the_last_window_gives_the_interpreter_its_gc_back"]),
    M("gc-left-frozen", "the restored policy leaves objects frozen",
      "neurolens/gui/gc_policy.py",
      [("        gc.unfreeze()\n        gc.set_threshold(*self.threshold)\n",
        "        gc.set_threshold(*self.threshold)\n")],
      ["tests/test_gui.py::test_closing_the_last_window_gives_the_interpreter_its_gc_back"]),
    M("settings-ignore-test-folder", "windows use the user's real QSettings",
      "neurolens/gui/settings.py",
      [("    d = settings_dir()\n    if d is None:\n        return QSettings",
        "    d = settings_dir()\n    if True:\n        return QSettings")],
      ["tests/test_gui.py::test_windows_keep_settings_and_autosave_in_the_test_folder"]),
    M("prune-pre-baked-as-post", "a hook_pre prune is baked into the down projection instead",
      "neurolens/engine/lm.py",
      [("            return BakeTarget(writes=view(nat.module, nat.part),\n"
        "                              writes_zero=_activation(hf.config) in ZERO_AT_ZERO)",
        "            return BakeTarget(reads=view(arch.down))")],
      ["tests/test_methods.py::test_neurostrike_finds_planted_safety_neurons"]),
    M("token-accuracy-off-by-one", "teacher-forced scoring compares each token with the next",
      "neurolens/engine/lm.py",
      [("lg[s - 1:len(ids) - 1]", "lg[s:len(ids)]")],
      ["tests/test_skills_eval.py::test_stdlib_code_rows_keep_token_accuracy"]),
    M("ksd-cube-collapsed", "KSD's gate is fitted with k* = 0: its cube never holds a prompt",
      "neurolens/methods/key_space.py",
      [("    op = Gate(site, mu, s, k, alpha=alpha, refusal=refusal,",
        "    op = Gate(site, mu, s, 0.0, alpha=alpha, refusal=refusal,")],
      [P + "test_ksd_unlearning_forgets_one_skill_and_keeps_the_others"]),
    M("neurostrike-negative-weights", "NeuroStrike takes the neurons with negative probe weights",
      "neurolens/methods/neurostrike.py",
      [("& (w[i] > 0))[0]", "& (w[i] < 0))[0]")],
      [P + "test_neurostrike_pruning_breaks_the_refusal"]),
    M("topk-threshold-low", "the statistical top-k threshold is mean + 0.8 z std",
      "neurolens/engine/method_ops.py",
      [("return mean.add_(var.sqrt_(), alpha=z)", "return mean.add_(var.sqrt_(), alpha=0.8 * z)")],
      [P + "test_statistical_topk_realises_its_keep_fraction_per_layer"]),
    M("memorization-lowest-scores", "the memorization masks take each row's lowest scores",
      "neurolens/methods/memorization.py",
      [("top = np.argpartition(-st, k - 1, axis=1)[:, :k]",
        "top = np.argpartition(st, k - 1, axis=1)[:, :k]")],
      [P + "test_memorization_edit_removes_copies_and_keeps_digits"]),
    M("mask-edit-noop", "a MaskWeights edit leaves the layer's output as it is",
      "neurolens/engine/interventions.py",
      [("return y - torch.nn.functional.linear(x.to(y.dtype), wm)", "return y")],
      [P + "test_memorization_edit_removes_copies_and_keeps_digits"]),
]


def scratch_copy(dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files of the working tree."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def apply(text: str, m: Mutation) -> str:
    for old, new in m.replace:
        n = text.count(old)
        if n != 1:
            raise ValueError(f"{m.name}: {old!r} occurs {n} times in {m.file} (want 1)")
        text = text.replace(old, new)
    return text


def check_applies(root: Path = ROOT, mutations=MUTATIONS) -> list[str]:
    """Problems: mutations whose text is gone (or ambiguous), unknown files, duplicate names."""
    problems, seen = [], set()
    for m in mutations:
        if m.name in seen:
            problems.append(f"duplicate mutation name {m.name}")
        seen.add(m.name)
        path = root / m.file
        if not path.is_file():
            problems.append(f"{m.name}: no file {m.file}")
            continue
        try:
            apply(path.read_text(), m)
        except ValueError as e:
            problems.append(str(e))
        for t in m.tests:
            if not (root / t.split("::")[0]).is_file():
                problems.append(f"{m.name}: no test file {t.split('::')[0]}")
    return problems


def run_tests(tree: Path, tests, timeout: float) -> tuple[int, float, str]:
    # the user's config and data folders too: a mutant may ignore the tests' settings folder
    env = dict(os.environ, PYTHONPATH=str(tree), QT_QPA_PLATFORM="offscreen",
               HF_HUB_OFFLINE="1", XDG_CONFIG_HOME=str(tree / ".xdg-config"),
               XDG_DATA_HOME=str(tree / ".xdg-data"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           *tests]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True,
                           timeout=timeout)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        rc, out = -1, "timed out"
    return rc, time.perf_counter() - t, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="mutations to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--check", action="store_true",
                    help="only check that every mutation still applies")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the run of the named tests on the unmutated copy")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    ap.add_argument("-v", "--verbose", action="store_true", help="print pytest's output tail")
    a = ap.parse_args(argv)
    if a.list:
        for m in MUTATIONS:
            print(f"{m.name:28s} {m.what}")
        return 0
    problems = check_applies()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    if a.check:
        print(f"all {len(MUTATIONS)} mutations apply")
        return 0
    by_name = {m.name: m for m in MUTATIONS}
    unknown = [n for n in a.names if n not in by_name]
    if unknown:
        print(f"unknown mutation(s): {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 2
    chosen = [by_name[n] for n in a.names] or MUTATIONS
    with tempfile.TemporaryDirectory(prefix="neurolens-mutants-") as tmp:
        tree = Path(tmp)
        scratch_copy(tree)
        where = "import neurolens; print(neurolens.__file__)"
        probe = subprocess.run([sys.executable, "-c", where],
                               cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)),
                               capture_output=True, text=True)
        if not probe.stdout.strip().startswith(str(tree)):
            print(f"the scratch copy is not what imports: {probe.stdout or probe.stderr}",
                  file=sys.stderr)
            return 2
        if not a.no_baseline:
            tests = list(dict.fromkeys(t for m in chosen for t in m.tests))
            rc, secs, out = run_tests(tree, tests, a.timeout)
            print(f"baseline: {len(tests)} test selections, rc {rc}, {secs:.0f}s")
            if rc != 0:
                print(out[-3000:])
                print("the named tests fail without any mutation: fix them first",
                      file=sys.stderr)
                return 1
        results = []
        for m in chosen:
            path = tree / m.file
            original = path.read_text()
            path.write_text(apply(original, m))
            try:
                rc, secs, out = run_tests(tree, m.tests, a.timeout)
            finally:
                path.write_text(original)
            verdict = {1: "caught"}.get(rc, "NOT CAUGHT" if rc == 0 else f"error (rc {rc})")
            results.append((m, verdict))
            print(f"{verdict:12s} {m.name:28s} {secs:6.0f}s  {m.what}", flush=True)
            if a.verbose or verdict != "caught":
                print("    " + "\n    ".join(out.strip().splitlines()[-8:]))
    missed = [m.name for m, v in results if v != "caught"]
    print(f"\n{len(results) - len(missed)} of {len(results)} caught"
          + (f"; not caught: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
