"""Generation events, cancel from another thread, failure cleanup, seeds, positions."""

import threading

import numpy as np
import pytest
import torch

import neurolens as nl
from neurolens.engine.hooks import CancelToken
from neurolens.engine import ops as op_registry
from neurolens.engine.events import (Cancelled, Failed, Finished, PromptProcessed,
                                     TokenAppended)
from neurolens.spec.run import GenerationParams
from neurolens.store import CaptureStore
from native_sites import plain_read
from test_engine_archs import hook_dicts


def test_event_sequence_and_streamed_capture(llama):
    store = CaptureStore()
    params = GenerationParams(max_new_tokens=4, ignore_eos=True)
    events = list(llama.generate_events(["ab", "hello"], params=params,
                                        capture_sites=["blocks.1.mlp.hook_post"], store=store))
    kinds = [type(e).__name__ for e in events]
    assert kinds[:2] == ["Started", "PromptProcessed"] and kinds[-1] == "Finished"
    assert (events[0].total, events[0].unit) == (2, "prompts")
    assert kinds.count("TokenAppended") == 4
    outs = events[-1].result
    # prompt rows + one row per generated token (the last token is never fed back)
    for i, o in enumerate(outs):
        n_prompt = len(store.tokens[i])
        assert store.rows("blocks.1.mlp.hook_post", i).shape == (n_prompt + len(o.token_ids) - 1,
                                                                  64)


def test_cancel_from_another_thread_stops_within_one_token(llama):
    cancel = CancelToken()
    seen = []
    before = hook_dicts(llama.hf)
    params = GenerationParams(max_new_tokens=10_000, ignore_eos=True)
    gen = llama.generate_events(["long run"], params=params, cancel=cancel)
    stop_at = None
    for ev in gen:
        if isinstance(ev, TokenAppended):
            seen.append(ev.step)
            if ev.step == 5:
                t = threading.Thread(target=cancel.cancel)
                t.start()
                t.join()
                stop_at = ev.step
        if isinstance(ev, (Cancelled, Finished)):
            last = ev
    assert isinstance(last, Cancelled)
    assert seen[-1] == stop_at  # not one more token after the cancel
    assert last.partial[0].finish_reason == "cancelled"
    assert len(last.partial[0].token_ids) == stop_at + 1
    assert hook_dicts(llama.hf) == before


def test_cancel_while_running_in_worker_thread(llama):
    cancel = CancelToken()
    result = {}
    started = threading.Event()

    def work():
        try:
            llama.generate("x", max_new_tokens=100_000, cancel=cancel, ignore_eos=True,
                           progress=lambda done, total: started.set())
        except nl.NeurolensError as e:
            result["err"] = e
    t = threading.Thread(target=work)
    t.start()
    assert started.wait(timeout=60), "generation never started"
    cancel.cancel()
    t.join(timeout=60)        # generous: the one-token bound is the test above
    assert not t.is_alive()
    assert "cancelled" in str(result["err"])


def test_hooks_removed_after_failure(llama):
    class Boom(RuntimeError):
        pass

    def builder(op, ref, ctx):
        def h(x, state):
            if state.phase == "decode":
                raise Boom("handler failed")
            return x
        return h
    op_registry.register("boom")(builder)
    try:
        op = nl.Prune("blocks.0.mlp.hook_post", [0])
        op.__class__ = type("BoomOp", (nl.Prune,), {"op": "boom"})
        before = hook_dicts(llama.hf)
        events = list(llama.generate_events(["a"], edits=nl.EditSet([op]),
                                            params=GenerationParams(max_new_tokens=3)))
        assert isinstance(events[-1], Failed) and isinstance(events[-1].error, Boom)
        assert hook_dicts(llama.hf) == before
        with pytest.raises(Boom):
            llama.generate("a", edits=nl.EditSet([op]), max_new_tokens=3)
        assert hook_dicts(llama.hf) == before
    finally:
        op_registry.unregister("boom")


def test_abandoned_generator_removes_hooks(llama):
    before = hook_dicts(llama.hf)
    e = nl.EditSet([nl.Prune("blocks.0.mlp.hook_post", [0])])
    gen = llama.generate_events(["a"], edits=e, params=GenerationParams(max_new_tokens=50))
    for ev in gen:
        if isinstance(ev, PromptProcessed):
            assert hook_dicts(llama.hf) != before  # hooks live during the run
            break
    gen.close()
    assert hook_dicts(llama.hf) == before


def test_seeded_sampling_is_reproducible(gpt2):
    a = gpt2.generate(["abc", "de"], do_sample=True, seed=3, max_new_tokens=12)
    b = gpt2.generate(["abc", "de"], do_sample=True, seed=3, max_new_tokens=12)
    c = gpt2.generate(["abc", "de"], do_sample=True, seed=4, max_new_tokens=12)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    assert [o.token_ids for o in a] != [o.token_ids for o in c]
    g = gpt2.generate("abc", max_new_tokens=12)
    assert g.token_ids == gpt2.generate("abc", max_new_tokens=12).token_ids


def test_greedy_matches_transformers_generate(llama):
    enc = llama.encode(["Compute: 1+2="])
    with torch.no_grad():
        ref = llama.hf.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=0)
    ours = llama.generate("Compute: 1+2=", max_new_tokens=8)
    want = ref[0, enc["input_ids"].shape[1]:].tolist()
    got = ours.token_ids + ([0] if ours.finish_reason == "eos" else [])
    assert got == want[:len(got)]
    assert len(got) == len(want) or ours.finish_reason == "eos"


def test_logprobs_are_those_of_the_chosen_tokens(gpt2):
    o = gpt2.generate("hello", max_new_tokens=5)
    seq = gpt2.encode(["hello"])["input_ids"][0].tolist()
    lg = gpt2.logits([seq + o.token_ids[:-1]])[0]
    lp = torch.log_softmax(torch.tensor(lg), -1).numpy()
    n = len(seq)
    for k, t in enumerate(o.token_ids):
        assert abs(lp[n - 1 + k, t] - o.logprobs[k]) < 1e-4


def test_stop_strings(gpt2):
    free = gpt2.generate("hello", max_new_tokens=20, ignore_eos=True)
    assert len(free.tokens) >= 3
    stop = free.tokens[2]
    o = gpt2.generate("hello", max_new_tokens=20, stop=[stop], ignore_eos=True)
    assert o.finish_reason == "stop"
    assert o.token_ids == free.token_ids[:len(o.token_ids)]
    assert stop in o.text



def test_row_stops_end_only_their_own_row(gpt2):
    prompts = ["hello", "the cat"]
    free = gpt2.generate(prompts, max_new_tokens=12, ignore_eos=True)
    stop = free[0].tokens[2]
    assert stop not in "".join(free[1].tokens)     # (else the second row's check is void)
    outs = gpt2.generate(prompts, max_new_tokens=12, ignore_eos=True, row_stop=[[stop], []])
    n = len(outs[0].token_ids)
    assert outs[0].finish_reason == "stop" and outs[0].token_ids == free[0].token_ids[:n] and n < 12
    assert outs[1].finish_reason == "length" and outs[1].token_ids == free[1].token_ids
    with pytest.raises(nl.InputError, match="row_stop has 1 entries for 2 prompts"):
        gpt2.generate(prompts, max_new_tokens=2, row_stop=[[stop]])


@pytest.mark.parametrize("positions,changed", [("last", {5}), ([0, 2], {0, 2}),
                                               ([-1], {5}), ("all", set(range(6)))])
def test_positions_select_cells(llama, positions, changed):
    """A set edit on chosen positions changes exactly those rows of the captured site."""
    site = "blocks.0.mlp.hook_pre"
    prompt = "abcdef"
    e = nl.EditSet([nl.Set(site, [4], value=7.5, positions=positions)])
    base = llama.capture([prompt], [site])[site][0]
    ed = llama.capture([prompt], [site], edits=e)[site][0]
    rows = {int(r) for r in np.nonzero(np.abs(ed - base).max(1) > 0)[0]}
    assert rows == changed
    assert np.all(ed[sorted(changed), 4] == 7.5)


def test_positions_in_padded_batch(llama):
    site = "blocks.0.mlp.hook_pre"
    e = nl.EditSet([nl.Set(site, [4], value=-3.0, positions=[1])])
    caps = llama.capture(["abcdef", "xy"], [site], edits=e, batch_size=2)[site]
    for c in caps:
        assert c[1, 4] == -3.0 and np.all(c[np.arange(len(c)) != 1, 4] != -3.0)


def _reference_post(lm, arch, prompt):
    """hook_post rows of every layer from plain PyTorch forward-pre-hooks (copies) on the down
    projections written out by hand in ``native_sites``."""
    sites = {layer: ("mlp.hook_post", layer) for layer in range(lm.n_layers)}
    return plain_read(lm.hf, arch, sites, **lm.encode([prompt]))


@pytest.mark.parametrize("fixture", ["llama", "gpt2"])
def test_capture_keeps_model_tensors_and_stops_after_last_site(fixture, request):
    """Captures of linear inputs keep the model's own tensor (no copy) and the forward stops
    after the last captured site: the rows are still exactly the model's, a later run never
    changes an earlier capture, and the LM head does not run."""
    lm = request.getfixturevalue(fixture)
    lm.sites()                                       # site discovery runs one full forward
    head_calls = []
    h = lm.hf.get_output_embeddings().register_forward_hook(lambda *a: head_calls.append(1))
    try:
        first = lm.capture(["the cat sat on the mat"], "blocks.*.mlp.hook_post")
        assert head_calls == []                      # stopped before the LM head
        ref = _reference_post(lm, fixture, "the cat sat on the mat")
        head_calls.clear()
        snapshot = {s: first[s][0].copy() for s in first.keys()}
        lm.capture(["a completely different prompt with more words in it"],
                   "blocks.*.mlp.hook_post")
        lm.generate("the dog", max_new_tokens=3)
    finally:
        h.remove()
    for layer in range(lm.n_layers):
        site = f"blocks.{layer}.mlp.hook_post"
        np.testing.assert_array_equal(first[site][0], ref[layer])
        np.testing.assert_array_equal(first[site][0], snapshot[site])


def test_capture_of_an_early_site_with_a_later_edit_and_gate(llama):
    """An edit after the captured site cannot change the capture (early stop is exact); a
    gate edit keeps the full forward so its abstentions are still computed."""
    from neurolens.spec.edits import EditSet, Gate, Prune
    width = llama.sites()["blocks.1.mlp.hook_post"]
    base = llama.capture(["hello world"], "blocks.0.mlp.hook_post")
    pruned = llama.capture(["hello world"], "blocks.0.mlp.hook_post",
                           edits=EditSet([Prune("blocks.1.mlp.hook_post", [0, 1])]))
    np.testing.assert_array_equal(base["blocks.0.mlp.hook_post"][0],
                                  pruned["blocks.0.mlp.hook_post"][0])
    seen = []
    h = llama.resolve("blocks.1.mlp.hook_post").module.register_forward_pre_hook(
        lambda *a: seen.append(1))
    try:
        gate = Gate("blocks.1.mlp.hook_post", np.zeros(width), np.ones(width), k=1.0, alpha=1.0)
        llama.capture(["hello world"], "blocks.0.mlp.hook_post", edits=EditSet([gate]))
    finally:
        h.remove()
    assert seen, "a gate edit must run its site even after the last capture"


def test_generation_takes_token_ids_and_models_without_a_tokenizer(llama):
    """One decode path: token-id prompts give what their text gives, and a model without a
    tokenizer (the bench's random models) generates ids equal to plain transformers'."""
    from neurolens.engine.lm import LanguageModel
    from native_sites import plain_greedy
    ids = llama.tokenizer("hello world")["input_ids"]
    by_text = llama.generate("hello world", max_new_tokens=5, ignore_eos=True)
    by_ids = llama.generate(ids, max_new_tokens=5, ignore_eos=True)
    assert by_ids.token_ids == by_text.token_ids and by_ids.text == by_text.text
    two = llama.generate([ids, ids[:2]], max_new_tokens=5, ignore_eos=True)
    assert two[0].token_ids == by_text.token_ids
    bare = LanguageModel(llama.hf, None, name_or_path="no tokenizer")
    out = bare.generate(ids, max_new_tokens=6, ignore_eos=True, batch_size=1)
    assert out.token_ids == plain_greedy(llama.hf, ids, 6) and out.text == ""
    with pytest.raises(nl.InputError, match="token ids"):
        llama.generate([ids, "text"], max_new_tokens=1)
