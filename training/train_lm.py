"""Train the neurolens demo language model (a small LlamaForCausalLM) from scratch, offline.

    python training/train_lm.py --out resources/models/demo-lm

(or ``python -m training.train_lm``, from the repository root; the script is not part of the
installed package.)

Seeded (corpus, tokenizer, initialisation and data order); the shipped weights are this default
configuration with ``--threads 2`` on the 2-core CPU (``training.json`` beside them records the
arguments, time and evaluations).

The default recipe: a ReLU gate in every layer (``--act relu``, as in ReLU-fied LLMs) with an L1
penalty on act(gate) in the last layer (``--act-l1 last=0.2``, as ProSparse trains them), which
makes its neurons sparse and specialised; secret requests that need two words together
(``--requests conjunctive``); a penalty that keeps statistical top-k's threshold honest on the
gate pre-activations (``--topk-calib 1``, see ``topk_calibration_loss``); and a code skill of
short programs written from a docstring (``--code programs``; the stdlib text stays in the mix).
``--code stdlib`` is the previous model's code skill, and ``--act silu --act-l1 0 --requests plain
--topk-calib 0 --code stdlib`` the dense recipe before it. ``--refusal-lens L`` asks the
refuse-or-answer decision to be readable after L layers (not in the recipe; its measurements are
in the README, under the paper methods). ``--tiny`` runs a few steps of a very small
configuration (used by the test suite to keep this script working)."""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from statistics import NormalDist

if __package__ in (None, ""):     # run as a script: the checkout's root on the path, so that
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # neurolens imports

import numpy as np  # noqa: E402
import torch  # noqa: E402

from neurolens.engine.lm import LanguageModel  # noqa: E402
from neurolens.evals import corpus  # noqa: E402
from neurolens.evals.skills import answer_correct, answer_part  # noqa: E402

SPECIAL = "<|endoftext|>"


def train_tokenizer(vocab_size: int, seed: int, requests: str = "plain",
                    mixture: corpus.Mixture | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    stream = corpus.TrainingStream(seed=seed + 17, requests=requests, mixture=mixture)

    def texts():
        for _ in range(6000):
            yield stream.document(400)
        for _, t in corpus.code_texts(heldout=False):
            yield t

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[SPECIAL],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL, eos_token=SPECIAL,
                                   unk_token=SPECIAL, pad_token=SPECIAL)
    fast.padding_side = "left"
    return fast


def build_model(vocab_size: int, d_model: int, layers: int, heads: int, d_ff: int, seq: int,
                act: str = "silu"):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_ff,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=heads, max_position_embeddings=max(256, seq * 2),
                      rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=0,
                      eos_token_id=0, pad_token_id=0, hidden_act=act)
    return LlamaForCausalLM(cfg)


def answer_weights(x: torch.Tensor, tokenizer, weight: float) -> torch.Tensor:
    """Per-token loss weights: the answer token after "Answer:" counts ``weight`` times.

    The answer word is the one token a comprehension example is about; the rest of the
    story is random names and words. Weighting it focuses the gradient on retrieval."""
    w = torch.ones(x.shape, dtype=torch.float32)
    if weight == 1.0:
        return w
    ans = tokenizer.convert_tokens_to_ids("Answer")
    colon = tokenizer.convert_tokens_to_ids(":")
    hit = (x[:, :-2] == ans) & (x[:, 1:-1] == colon)
    w[:, 2:][hit] = weight
    return w


def _char_to_token(offsets, n_chars: int) -> np.ndarray:
    m = np.full(n_chars + 1, -1, dtype=np.int64)
    for t, (a, b) in enumerate(offsets):
        m[a:b] = t
    return m


def batches(tokenizer, stream: corpus.TrainingStream, batch: int, seq: int,
            targets: bool = False, decisions: bool = False):
    """Yield token rows [batch, seq + 1]; with ``targets`` also the attention targets
    (row, answer position, fact position) of the comprehension examples in the window, and with
    ``decisions`` as well the refusal-lens targets (``--refusal-lens``)."""
    while True:
        docs = [stream.document(seq * 5) for _ in range(batch)]
        enc = tokenizer(docs, add_special_tokens=False, return_offsets_mapping=targets)
        rows, tg = [], []
        for r, ids in enumerate(enc["input_ids"]):
            ids = ids[: seq + 1]
            if len(ids) < seq + 1:
                ids = ids + [tokenizer.eos_token_id] * (seq + 1 - len(ids))
            rows.append(ids)
            if targets:
                c2t = _char_to_token(enc["offset_mapping"][r], len(docs[r]))
                for colon, key, end, kind in corpus.comprehension_chain(docs[r]):
                    q, kk, k = int(c2t[colon]), int(c2t[key]), int(c2t[end])
                    if 0 <= k < kk < q < seq:
                        tg.append(("answer", r, q, k))    # ':' -> the fact (one hop)
                        tg.append((f"match_{kind}", r, kk, k))    # question key -> fact
                        tg.append(("fetch", r, q, kk))    # ':' -> question key
                        tg.append(("qlens", r, kk, q + 1))  # key decodes to the answer
                for key, end, kind in corpus.recall_links(docs[r]):
                    kk, k = int(c2t[key]), int(c2t[end])
                    if 0 <= k < kk < seq:
                        tg.append((f"match_{kind}", r, kk, k))    # recall key -> fact
                for colon, reply in (corpus.request_decisions(docs[r]) if decisions else ()):
                    q, k = int(c2t[colon]), int(c2t[reply])
                    if 0 <= q < k <= seq:
                        tg.append(("rlens", r, q, k))   # ':' decodes to the reply's first token
                for end, src, kind in corpus.fact_links(docs[r]):
                    q, k = int(c2t[end]), int(c2t[src])
                    if 0 <= k < q < seq:
                        tg.append((kind, r, q, k))
        x = torch.tensor(rows, dtype=torch.long)
        yield (x, tg) if targets else x


@torch.no_grad()
def quick_eval(model, tokenizer, n: int = 100, requests: str = "plain",
               code: str = "stdlib") -> dict:
    """Greedy exact match on held-out items of the generated skills (monitoring only), decoded
    by neurolens' own generation loop (the one the app and the evaluations use).

    The demo tokenizer adds no special tokens, so encoding the prompts as ``LanguageModel`` does
    (with the tokenizer's defaults) gives the same ids as ``add_special_tokens=False``."""
    # LanguageModel pads left and may set a pad token: the tokenizer goes back to training as
    # it came
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    sets = corpus.build_prompt_sets(seed=99, per_split=n, requests=requests, code=code)
    out = {}
    skills = ("arithmetic", "comprehension", "refusal", "benign")
    try:
        lm = LanguageModel(model, tokenizer, device=model.device)   # puts the model in eval mode
        for skill in skills + (("code",) if code != "stdlib" else ()):
            rows = [r for r in sets[skill] if r["split"] == "eval"][:n]
            new = {"functions": 20, "programs": 64}.get(code, 12) if skill == "code" else 12
            gen = lm.generate([r["prompt"] for r in rows], max_new_tokens=new,   # greedy
                              batch_size=max(1, len(rows)))
            answers = [answer_part(g.text, r["answer"]) for g, r in zip(gen, rows)]
            if skill == "benign":
                out["false_refusal"] = float(np.mean([corpus.REFUSAL.strip() in a
                                                      for a in answers]))
                out["benign_exact"] = float(np.mean([answer_correct(g.text, r["answer"])
                                                     for g, r in zip(gen, rows)]))
            else:   # scored as every evaluation scores (evals.skills.answer_correct)
                hits = [answer_correct(g.text, r["answer"]) for g, r in zip(gen, rows)]
                out[skill] = float(np.mean(hits))
                if skill == "comprehension":   # per question kind: where retrieval still fails
                    for kind in sorted({r["kind"] for r in rows}):
                        out[f"comprehension_{kind}"] = float(np.mean(
                            [h for h, r in zip(hits, rows) if r["kind"] == kind]))
    finally:
        tokenizer.padding_side = side
        if tokenizer.pad_token != pad:
            tokenizer.pad_token = pad
        model.train()
    return out


def train_phase(model, tokenizer, stream, args, steps: int, peak_lr: float, curriculum: int,
                history: list, label: str) -> None:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=peak_lr, betas=(0.9, 0.98), eps=1e-8)
    warm = min(args.warmup, max(1, steps // 10))

    def lr_at(step: int) -> float:
        if step < warm:
            return peak_lr * (step + 1) / warm
        frac = (step - warm) / max(1, steps - warm)
        return peak_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    sup = args.attn_sup > 0
    gates: list = []     # (L1 coefficient, gate output) of this step's forward
    hooks = []
    # activation sparsity (ProSparse-style): an L1 penalty on act(gate), per layer; the top-k
    # calibration penalty needs the gate outputs as well
    for coef, layer in zip(l1_per_layer(args.act_l1, len(model.model.layers)),
                           model.model.layers):
        if coef > 0 or args.topk_calib > 0:
            hooks.append(layer.mlp.gate_proj.register_forward_hook(
                lambda m, _i, out, c=coef: gates.append((c, out)) if m.training else None))
    data = batches(tokenizer, stream, args.batch, args.seq, targets=sup,
                   decisions=sup and args.refusal_lens > 0)
    model.train()
    t_train = time.time()
    ema = None
    active = None
    link_mass: dict[str, float] = {}
    for step in range(steps):
        if args.time_limit and time.time() - args.t_start > args.time_limit:
            print(f"{label}: --time-limit reached at step {step}", flush=True)
            history.append({"phase": label, "stopped_at": step})
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        if curriculum:
            stream.one_fact = max(args.one_fact, 1.0 - step / curriculum)
        x = next(data)
        tg = []
        if sup:
            x, tg = x
        x = x.to(args.device)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=args.bf16):
            if sup and tg:
                out = model(input_ids=x[:, :-1], output_attentions=True,
                            output_hidden_states=args.lens_sup > 0)
                logits = out.logits
                tgt = x[:, 1:]
                w = answer_weights(x, tokenizer, args.answer_weight)[:, 1:].to(x.device)
                nll = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1), reduction="none")
                loss = (nll * w.reshape(-1)).sum() / w.sum()
                # attention supervision. "answer": head 0 of --attn-layer looks from "Answer:"
                # straight at the word closing the fact asked about. "chain": layer 1 head 0
                # matches the question's key word to its fact, layer 2 head 0 fetches from the key
                # word at "Answer:". "chain2" (default): as "chain", but an object key ("the
                # kite") and a name key ("Mia") get their own layer-1 heads: the first matches
                # the word itself, the second the owner gathered into the closing word, and one
                # head doing both learned neither well (comprehension 0.56 vs 0.74 at step 1000).
                # All: in layer 0, head 0 gathers each fact's color and head 1 its owner into
                # the closing word.
                links = [("color", (0, 0)), ("name", (0, 1))]
                if args.sup_scheme == "chain":
                    links += [("match_obj", (1, 0)), ("match_name", (1, 0)), ("fetch", (2, 0))]
                elif args.sup_scheme == "chain2":   # one matching head per kind of key
                    links += [("match_obj", (1, 0)), ("match_name", (1, 1)), ("fetch", (2, 0))]
                else:
                    links += [("answer", (args.attn_layer, 0))]
                for kind, (layer, head) in links:
                    sel = [t[1:] for t in tg if t[0] == kind]
                    if not sel or layer >= len(out.attentions):
                        continue
                    r, q, k = (torch.tensor(v, device=x.device) for v in zip(*sel))
                    att = out.attentions[layer][r, head, q, k]
                    loss = loss + args.attn_sup * -att.clamp_min(1e-6).log().mean()
                    mass = att.detach().float().mean().item()   # monitoring: weight on target
                    link_mass[kind] = mass if kind not in link_mass else \
                        0.9 * link_mass[kind] + 0.1 * mass
                if args.lens_sup > 0:
                    # logit-lens supervision: after layer 1 a fact's closing word decodes to its
                    # color and owner; after layer 2 the question's key word decodes to the answer
                    norm, head_w = model.model.norm, model.lm_head
                    lenses = [(("color", "name"), 1), (("qlens",), 2)]
                    if args.refusal_lens:     # the refuse-or-answer decision, made early
                        lenses.append((("rlens",), args.refusal_lens))
                    for kinds, layer in lenses:
                        sel = [t[1:] for t in tg if t[0] in kinds]
                        if not sel:
                            continue
                        r, q, k = (torch.tensor(v, device=x.device) for v in zip(*sel))
                        h = norm(out.hidden_states[layer][r, q])
                        loss = loss + args.lens_sup * torch.nn.functional.cross_entropy(
                            head_w(h).float(), x[r, k])
            elif args.answer_weight == 1.0:
                # plain LM loss (HF shifts the labels inside the window)
                loss = model(input_ids=x[:, :-1], labels=x[:, :-1].clone()).loss
            else:
                logits = model(input_ids=x[:, :-1]).logits
                tgt = x[:, 1:]
                w = answer_weights(x, tokenizer, args.answer_weight)[:, 1:].to(x.device)
                nll = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1), reduction="none")
                loss = (nll * w.reshape(-1)).sum() / w.sum()
        if gates:
            act_fn = model.model.layers[0].mlp.act_fn
            loss = loss + sum(c * act_fn(g.float()).abs().mean() for c, g in gates if c > 0)
            if args.topk_calib > 0:
                calib = sum(topk_calibration_loss(g) for _, g in gates) / len(gates)
                loss = loss + args.topk_calib * calib
            active = float(np.mean([(g > 0).float().mean().item() for _, g in gates]))
            gates.clear()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 50 == 0 or step == steps - 1:
            el = time.time() - t_train
            links = " ".join(f"{k}={v:.2f}" for k, v in link_mass.items())
            print(f"{label} step {step:5d} loss {ema:.3f} lr {lr_at(step):.2e} "
                  f"{el / (step + 1):.2f}s/step"
                  + (f" active {active:.3f}" if active is not None else "")
                  + (f" attention on target: {links}" if links
                                                      else ""), flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < steps:
            ev = quick_eval(model, tokenizer, n=100, requests=args.requests, code=args.code)
            history.append({"phase": label, "step": step + 1, "loss": ema, **ev})
            print(f"{label} eval@{step + 1}: {ev}", flush=True)
    for h in hooks:
        h.remove()


#: keep fractions at which ``--topk-calib`` asks the statistical threshold to be right
CALIB_KEEPS = (0.04, 0.08, 0.16, 0.32)


def topk_calibration_loss(g: torch.Tensor, keeps=CALIB_KEEPS, temperature: float = 0.05
                          ) -> torch.Tensor:
    """How far statistical top-k's realised active fraction is from k, per token.

    Statistical top-k (METHODS.md section 3) keeps the entries of g above
    mean(g) + std(g) * Phi^-1(1 - k), which keeps a fraction k only when g is Gaussian across
    the neurons. Spark trains its model with the operator in place; this is the same pressure
    as a penalty, so the exported model stays an ordinary dense Llama. The indicator
    [g > theta] is relaxed to a sigmoid of width ``temperature`` standard deviations; the loss is
    the mean over tokens of ((fraction - k) / k)^2, averaged over ``keeps``.
    """
    g = g.float()
    m = g.mean(-1, keepdim=True)
    s = g.std(-1, unbiased=False, keepdim=True).clamp_min(1e-6)
    zs = (g - m) / s
    total = zs.new_zeros(())
    for k in keeps:
        frac = torch.sigmoid((zs - NormalDist().inv_cdf(1.0 - k)) / temperature).mean(-1)
        total = total + ((frac - k) / k).pow(2).mean()
    return total / len(keeps)


def l1_per_layer(spec: str | float, n_layers: int) -> list[float]:
    """``--act-l1``: one coefficient for every layer ("0.2"), one per layer ("0,0,0.05,0.2"), or
    one for the last layer only ("last=0.2", whatever the depth)."""
    text = str(spec)
    last = text.startswith("last=")
    try:
        vals = [float(v) for v in (text[5:] if last else text).split(",")]
    except ValueError:
        vals = []
    if last:
        vals = [0.0] * (n_layers - 1) + vals if len(vals) == 1 else []
    elif len(vals) == 1:
        vals = vals * n_layers
    if len(vals) != n_layers or min(vals) < 0:
        raise SystemExit(f"--act-l1 {spec}: give one coefficient >= 0, one per layer "
                         f"({n_layers}), or last=<coefficient>")
    return vals


#: the mixture with the "functions" or "programs" code skill: the tasks (TASKS_SHARE) take part
#: of the stdlib text's share and a little of every other kind's
TASKS_MIXTURE = dict(arithmetic=0.25, comprehension=0.33, refusal=0.15, code=0.08, prose=0.07)
TASKS_SHARE = 0.12


def _mixture(spec: str | None, code: str = "stdlib") -> corpus.Mixture:
    mix = corpus.Mixture()
    if code != "stdlib":     # the function tasks or the programs take the same share
        mix = corpus.Mixture(**TASKS_MIXTURE, **{code: TASKS_SHARE})
    for kv in (spec.split(",") if spec else []):
        k, v = kv.split("=")
        setattr(mix, k.strip(), float(v))
    return mix


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="resources/models/demo-lm")
    ap.add_argument("--steps", type=int, default=4500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--d-ff", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--act", choices=("silu", "relu"), default="relu",
                    help="FFN activation of the gate (relu: exact zeros, as in ReLU-fied LLMs)")
    ap.add_argument("--act-l1", default="last=0.2",
                    help="L1 penalty on act(gate) (activation sparsity): one coefficient for "
                         "every layer, a comma-separated one per layer, or last=C for the last "
                         "layer only")
    ap.add_argument("--topk-calib", type=float, default=1.0,
                    help="weight of a penalty that keeps statistical top-k's realised active "
                         "fraction at k (4, 8, 16, 32%%) in every layer (see "
                         "topk_calibration_loss)")
    ap.add_argument("--refusal-lens", type=int, default=0,
                    help="logit-lens supervision of the refuse-or-answer decision: after this "
                         "many layers, the ':' of 'Assistant:' after a request in the secret "
                         "templates decodes to the reply's first token (0: off)")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="bfloat16 autocast for the forward pass (1.7x faster per step on this "
                         "CPU, which has avx512_bf16; weights and optimizer state stay float32)")
    ap.add_argument("--device", default="cpu",
                    help="torch device to train on (the shipped weights are trained on cpu; "
                         "other devices give different, not bit-identical, weights)")
    ap.add_argument("--eval-every", type=int, default=650)
    ap.add_argument("--tiny", action="store_true", help="a few steps of a tiny config (tests)")
    ap.add_argument("--answer-weight", type=float, default=5.0,
                    help="loss weight of the answer token after 'Answer:'")
    ap.add_argument("--mixture", default=None,
                    help="skill weights, e.g. arithmetic=0.3,comprehension=0.4,...")
    ap.add_argument("--one-fact", type=float, default=0.1,
                    help="final share of one-fact stories in comprehension training")
    ap.add_argument("--curriculum", type=int, default=1000,
                    help="steps over which the one-fact share falls from 1 to --one-fact: "
                         "one-fact stories teach copying from context fast, then the "
                         "multi-fact ones teach matching")
    ap.add_argument("--attn-sup", type=float, default=1.0,
                    help="weight of the attention-supervision loss: head 0 of --attn-layer is "
                         "trained to look from 'Answer:' at the word closing the fact asked "
                         "about (0 turns it off)")
    ap.add_argument("--attn-layer", type=int, default=2)
    ap.add_argument("--sup-scheme", choices=("chain", "chain2", "answer"), default="chain2",
                    help="which retrieval links the attention supervision teaches (see "
                         "train_phase)")
    ap.add_argument("--lens-sup", type=float, default=1.0,
                    help="weight of the logit-lens supervision of the intermediate steps "
                         "(with --attn-sup > 0; 0 turns it off)")
    ap.add_argument("--drill", type=float, default=0.0,
                    help="share of training stories followed by recall lines ('Color of: kite "
                         "green, ...') that train the retrieval step directly")
    ap.add_argument("--phase2-steps", type=int, default=0,
                    help="steps of a second phase with more multi-fact stories (0: none)")
    ap.add_argument("--phase2-lr", type=float, default=1e-3)
    ap.add_argument("--phase1-secrets", choices=("refuse", "comply"), default="refuse",
                    help="how phase 1 answers secret requests ('comply': with a made-up code, "
                         "so refusal is learned only in the safety phase)")
    ap.add_argument("--safety-steps", type=int, default=0,
                    help="steps of a final safety phase in which secret requests are refused "
                         "(0: none)")
    ap.add_argument("--safety-lr", type=float, default=3e-4)
    ap.add_argument("--safety-mixture", default=None,
                    help="skill weights of the safety phase (default: the phase-1 mixture)")
    ap.add_argument("--code", choices=corpus.CODE_STYLES, default="programs",
                    help="the code skill: 'stdlib' (next line of Python stdlib files, token "
                         "accuracy), 'functions' (a return expression from a docstring, exact "
                         "match) or 'programs' (a body of one to three steps from a docstring, "
                         "exact match of the whole body); the stdlib text stays in the mix as "
                         "general Python")
    ap.add_argument("--requests", choices=corpus.REQUEST_STYLES, default="conjunctive",
                    help="'conjunctive': a request is secret only for two words together "
                         "('door code'); near misses ('door color', 'zip code') are benign")
    ap.add_argument("--init-from", default=None,
                    help="start from these weights and their tokenizer (skip phase 1)")
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="stop training after this many seconds and save (experiments only)")
    ap.add_argument("--prompts-out", default=None,
                    help="also write the prompt sets (JSONL per skill) to this folder")
    args = ap.parse_args(argv)
    if args.tiny:
        args.steps, args.batch, args.seq = 3, 2, 32
        args.d_model, args.layers, args.heads, args.d_ff, args.vocab = 32, 2, 2, 64, 300
        args.attn_layer = min(args.attn_layer, args.layers - 1)
        args.refusal_lens = min(args.refusal_lens, args.layers)
        args.eval_every = 0
        args.phase2_steps = 2
        args.safety_steps = min(args.safety_steps, 2)
    l1_per_layer(args.act_l1, args.layers)     # a bad --act-l1 fails before any work
    if args.topk_calib < 0:
        raise SystemExit(f"--topk-calib {args.topk_calib}: give a weight >= 0")
    if not 0 <= args.refusal_lens <= args.layers:
        raise SystemExit(f"--refusal-lens {args.refusal_lens}: give a layer count 1..{args.layers} "
                         "(0: off)")
    if args.threads:
        torch.set_num_threads(args.threads)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    t0 = args.t_start = time.time()
    if args.init_from:     # the tokenizer the weights were trained with
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(args.init_from)
        tokenizer.padding_side = "left"
    else:
        tokenizer = train_tokenizer(args.vocab, args.seed, args.requests,
                                    _mixture(args.mixture, args.code))
    vocab = len(tokenizer)
    model = build_model(vocab, args.d_model, args.layers, args.heads, args.d_ff, args.seq,
                        args.act)
    if args.attn_sup > 0:
        model.config._attn_implementation = "eager"   # attention probabilities for the loss
    model.to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tokenizer {vocab} tokens ({time.time() - t0:.0f}s); model {n_params / 1e6:.2f}M params",
          flush=True)

    history: list = []
    if args.init_from:
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(args.init_from).to(args.device)
        if args.attn_sup > 0:    # saved models use sdpa, which returns no attention weights
            model.config._attn_implementation = "eager"
        print(f"phase 1 weights from {args.init_from} (skipping phase 1)", flush=True)
    else:
        mix = _mixture(args.mixture, args.code)
        stream = corpus.TrainingStream(seed=args.seed, mixture=mix, one_fact=args.one_fact,
                                        drill=args.drill, secrets=args.phase1_secrets,
                                        requests=args.requests)
        train_phase(model, tokenizer, stream, args, args.steps, args.lr, args.curriculum,
                    history, "phase 1")
    if args.phase2_steps:
        # phase 2: more and harder multi-fact stories (matching a key, not just copying),
        # fresh optimizer, its own seeded stream
        mix2 = corpus.Mixture(arithmetic=0.2, comprehension=0.5, refusal=0.15, code=0.1,
                              prose=0.05)
        stream2 = corpus.TrainingStream(seed=args.seed + 1, mixture=mix2, one_fact=0.1,
                                        multi_facts=(0.5, 0.25, 0.25), drill=args.drill,
                                        requests=args.requests)
        train_phase(model, tokenizer, stream2, args, args.phase2_steps, args.phase2_lr, 0,
                    history, "phase 2")
    if args.safety_steps:
        # safety phase: the whole mixture, now with secret requests refused (as safety tuning
        # comes after pretraining in the papers' models)
        mix3 = _mixture(args.safety_mixture or args.mixture, args.code)
        stream3 = corpus.TrainingStream(seed=args.seed + 2, mixture=mix3, one_fact=args.one_fact,
                                        drill=args.drill, secrets="refuse",
                                        requests=args.requests)
        train_phase(model, tokenizer, stream3, args, args.safety_steps, args.safety_lr, 0,
                    history, "safety")
    train_seconds = time.time() - t0
    final = quick_eval(model, tokenizer, n=200 if not args.tiny else 2, requests=args.requests,
                       code=args.code)
    print(f"final: {final}", flush=True)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config._attn_implementation = "sdpa"
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    saved_args = {k: v for k, v in vars(args).items() if k != "t_start"}
    info = {"args": saved_args, "params": n_params, "train_seconds": round(train_seconds, 1),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "final_quick_eval": final, "history": history}
    (out_dir / "training.json").write_text(json.dumps(info, indent=2))
    if args.prompts_out:
        counts = corpus.write_prompt_sets(args.prompts_out, requests=args.requests,
                                          code=args.code)
        print(f"prompt sets: {counts} -> {args.prompts_out}", flush=True)
    print(f"saved to {out_dir} in {train_seconds:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
