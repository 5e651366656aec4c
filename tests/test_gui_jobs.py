"""The worker's jobs (Qt-free generators of engine events) on the tiny model, and the worker that
runs any job and forwards its events (coalesced to the display rate, the last one always sent)."""

import numpy as np
import pytest

import neurolens as nl
from neurolens.engine.events import Cancelled, Failed, Finished, Started
from neurolens.gui import jobs
from neurolens.spec.run import GenerationParams, RunSpec
from neurolens.store import CaptureStore

PROMPTS = ("the cat sat", "hello world")


def request(edits=None, n=5, **kw) -> RunSpec:
    return RunSpec(prompts=PROMPTS, set_names=("a", "b"), site_kinds=("mlp.hook_post",),
                   generation=GenerationParams(max_new_tokens=n, ignore_eos=True),
                   edits=edits, run_id=1, answers=kw.get("answers", (None, None)))


def drain(job, ctx):
    evs = list(job(ctx))
    assert isinstance(evs[-1], (Finished, Cancelled, Failed))
    return evs


def test_generate_job_streams_texts_and_ends_with_the_outputs(tiny_dirs):
    lm = nl.load(tiny_dirs["llama"])
    ctx = jobs.Context(model=lm)
    store = CaptureStore()
    evs = drain(jobs.generate(request(), store), ctx)
    assert isinstance(evs[0], Started) and evs[0].total == 2 * 5
    done = [e.done for e in evs if isinstance(e, jobs.Progressed)]
    assert done == sorted(done) and done[-1] == 10
    want = lm.generate(list(PROMPTS), max_new_tokens=5, ignore_eos=True)
    result = evs[-1].result
    assert result["outputs"] == [o.text for o in want]
    assert result["tokens"] == [o.tokens for o in want]
    # the last update holds every prompt's whole generated text
    last = [e.payload for e in evs if isinstance(e, jobs.Update)][-1]
    assert last == {i: o.text for i, o in enumerate(want)}
    # the store holds each prompt's rows (prompt + generated tokens but the last) at each layer
    for i, p in enumerate(PROMPTS):
        n_prompt = len(lm.tokenizer(p)["input_ids"])
        assert store.rows("blocks.1.mlp.hook_post", i).shape == (n_prompt + 4, 64)
        assert store.tokens[i][n_prompt:] == want[i].tokens


def test_compare_job_scores_sets_and_a_cancelled_job_says_so(tiny_dirs):
    lm = nl.load(tiny_dirs["llama"])
    ctx = jobs.Context(model=lm)
    edits = nl.EditSet([nl.Prune("blocks.1.mlp.hook_post", list(range(64)))])
    base_out = lm.generate(list(PROMPTS), max_new_tokens=5, ignore_eos=True)
    edit_out = lm.generate(list(PROMPTS), edits=edits, max_new_tokens=5, ignore_eos=True)
    # the first prompt's answer is its baseline output: right before, wrong after the edit
    answers = (base_out[0].text.split("\n")[0], None)
    store, base = CaptureStore(), CaptureStore()
    evs = drain(jobs.compare_generations(request(edits, answers=answers), store, base), ctx)
    r = evs[-1].result
    assert [it["base_text"] for it in r["items"]] == [o.text for o in base_out]
    assert [it["edit_text"] for it in r["items"]] == [o.text for o in edit_out]
    assert [it["changed"] for it in r["items"]] == [b.token_ids != e.token_ids
                                                    for b, e in zip(base_out, edit_out)]
    assert r["n_edits"] == 1 and r["seed"] == 0
    assert r["metrics"] == [{"set": "a", "n": 1, "before": 1.0,
                             "after": float(edit_out[0].text.split("\n")[0] == answers[0]),
                             "relative": float(edit_out[0].text.split("\n")[0] == answers[0])}]
    np.testing.assert_allclose(base.stats("blocks.1.mlp.hook_post").mean,
                               np.concatenate([base.rows("blocks.1.mlp.hook_post", i)
                                               for i in range(2)]).mean(0), rtol=1e-5,
                               atol=1e-6)
    assert not store.stats("blocks.1.mlp.hook_post").mean.any()     # the whole layer pruned
    ctx.cancel.cancel()
    assert isinstance(drain(jobs.generate(request(n=50), CaptureStore()), ctx)[-1], Cancelled)


def test_jobs_without_a_model():
    ctx = jobs.Context()
    with pytest.raises(Exception, match="no model loaded"):
        list(jobs.generate(request(), CaptureStore())(ctx))
    assert list(jobs.logit_lens(0, 1)(ctx))[-1].result == {"error": "no model loaded"}


@pytest.mark.gui
def test_the_worker_forwards_any_job_coalescing_updates(qtbot):
    """A made-up job: many updates in a burst reach the GUI as a few, the last one always, and
    before the result; an error becomes a failed notice with a message for people."""
    from PySide6.QtCore import QThread

    from neurolens.gui.worker import Jobs, Worker
    thread = QThread()
    worker = Worker()
    worker.moveToThread(thread)
    thread.start()
    try:
        client = Jobs(worker)
        seen = []

        def burst(ctx):
            yield Started(1000, "things")
            for k in range(1000):
                yield jobs.Progressed(k + 1, 1000)
                yield jobs.Update(k)
            yield Finished("the result")
        client.submit(burst, started=lambda n: seen.append(("started", n)),
                      progress=lambda d, n: seen.append(("progress", d)),
                      update=lambda p: seen.append(("update", p)),
                      done=lambda r: seen.append(("done", r)))
        qtbot.waitUntil(lambda: bool(seen) and seen[-1][0] == "done", timeout=30_000)
        assert seen[0] == ("started", 1000) and seen[-1] == ("done", "the result")
        assert seen[-3:-1] == [("progress", 1000), ("update", 999)]
        assert len(seen) < 200                 # coalesced: not one notice per update

        def broken(ctx):
            yield Started(1, "x")
            raise ValueError("bad input\nmore detail")
        failed = []
        client.submit(broken, failed=failed.append)
        qtbot.waitUntil(lambda: bool(failed), timeout=30_000)
        assert failed == ["ValueError: bad input"]
        with pytest.raises(TypeError, match="unknown job handlers"):
            client.submit(broken, finished=print)
    finally:
        thread.quit()
        thread.wait(10_000)
