"""Sparse decoding for attention top-k: one query row per step, the softmax and the value sum over
the kept keys only.

Masking the scores (what :class:`~neurolens.engine.attention.ops.AttnTopKEditor` does on the
eager path) changes the result but saves nothing: the softmax and the value sum still run over
all n keys. Here a decode step (query length 1) computes every q·k score (there is no low-cost
predictor), picks the kept keys with the same rule (:func:`~neurolens.engine.attention.ops.
stat_keep`), and gathers only those keys' value rows: the value sum reads about k of the n rows
of the value cache (one weighted ``embedding_bag`` over every head at once). From the
33rd step of a sequence on, the scores come from a transposed copy of the key cache kept across
the steps (:data:`TRANSPOSED_KEYS`). The
outputs equal the masked eager computation to float rounding (tested to 1e-5).

It replaces the architecture's eager attention function for a planned layer only where that
function is the plain one (``softmax(q k^T * scaling + mask) v`` with shared key/value heads
repeated; :data:`PLAIN_EAGER`), the step has one query, no dropout, no soft-cap and no reader,
and the layer's only editor is attention top-k. Anything else takes the masked eager path.
"""

from __future__ import annotations

import weakref
from statistics import NormalDist

import torch
import torch.nn.functional as F

#: take the sparse decode path where it applies (False: always the masked eager path)
ENABLED = True
#: keep a transposed copy of each layer's key cache (``[batch * kv heads, d_head, n]``) across
#: the decode steps of a run, appended to one column per step: q.k then streams long rows
#: (d_head multiply-adds vectorised over the keys) instead of n dot products of d_head values,
#: about twice as fast on a CPU. Costs a second copy of the key cache while a run decodes with
#: attention top-k (dropped at the next prefill and with the run), and building it costs about
#: three q.k passes, so it starts after :data:`TRANSPOSED_AFTER` decode steps of a sequence.
TRANSPOSED_KEYS = True
TRANSPOSED_AFTER = 32
#: spare columns of the transposed copy (it grows by a quarter when full)
HEADROOM = 128

_NEG = torch.tensor(float("-inf"))

#: modeling modules whose ``eager_attention_forward`` is the plain one (Llama's)
PLAIN_EAGER = frozenset(f"transformers.models.{m}.modeling_{m}" for m in (
    "llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "smollm3", "phi3", "gemma",
    "granite", "cohere", "starcoder2"))


def applies(module, taps, query: torch.Tensor, dropout: float, kwargs: dict) -> bool:
    """Whether a call may take the sparse decode path (see the module docstring)."""
    return (query.shape[-2] == 1 and not taps.readers and len(taps.editors) == 1
            and getattr(taps.editors[0], "sparse_decode", False) and not dropout
            and kwargs.get("softcap") is None and kwargs.get("head_mask") is None
            and type(module).__module__ in PLAIN_EAGER)


def _lean_keep(editor, s: torch.Tensor, heads: int):
    """Kept keys (flat indices into ``s`` ``[rows, n]``, row-major) of the statistical rule where
    every key is visible (rows: (batch, head) of ``heads`` query heads), and each row's top
    score. One comparison per score:
    ``s > theta or s >= top`` is ``s > min(theta, the float below top)``. The rule of
    :func:`~neurolens.engine.attention.ops.stat_keep` (mean, population std, the Gaussian
    quantile of 1 - k/n plus the editor's calibrated offset; the variance as E[s^2] - mean^2,
    which moves the threshold by float rounding only); None where the op does not act (every
    key kept). Few tensor ops: inside a forward each costs ~10 us of dispatch on a small CPU,
    as much as a pass over the scores."""
    op = editor.op
    R, n = s.shape
    k = float(op.k) if op.k is not None else n * op.keep_fraction
    if n < max(op.min_context, 1) or not k < n:
        return None
    z = NormalDist().inv_cdf(min(max(1.0 - k / n, 1e-7), 1 - 1e-7))
    mean = s.mean(-1, keepdim=True)
    var = (s * s).mean(-1, keepdim=True).addcmul_(mean, mean, value=-1)
    top = s.amax(-1, keepdim=True)
    std = var.clamp_min_(0.0).sqrt_()
    off = editor.offset
    if isinstance(off, float):
        mean.add_(std, alpha=z + off)
    else:                                           # per head: rows are (batch, head)
        mean.addcmul_(std, (editor._offset(heads).view(-1) + z).repeat(R // heads)
                      .view(R, 1).to(std.dtype))
    thr = torch.minimum(mean, torch.nextafter(top, _NEG))
    flat = torch.nonzero((s > thr).view(-1)).view(-1)
    acc = editor.stats.setdefault(editor.layer, [0.0, 0.0, 0])
    acc[0] += float(flat.numel())
    acc[1] += k * R
    acc[2] += R
    return flat, top


_MASK: list = [None, False]       # the last mask seen (by identity) and whether it masks


def _masks(attention_mask: torch.Tensor) -> bool:
    """Whether the additive mask hides anything (one check per forward: every layer of a
    forward gets the same mask tensor)."""
    last = _MASK[0]() if _MASK[0] is not None else None
    if last is attention_mask:
        return _MASK[1]
    got = bool(attention_mask.any())
    _MASK[0], _MASK[1] = weakref.ref(attention_mask), got
    return got


def keys_t(editor, key: torch.Tensor) -> torch.Tensor:
    """``key`` ``[b, kv, n, d]`` transposed, ``[b * kv, d, n]``, from the editor's copy: one new
    column where the cache grew by one key since the last step (its previous last key checked
    against the copy), else rebuilt. The editor drops the copy whenever a step takes the eager
    path (a prefill), so a new sequence always starts from a rebuild."""
    b, KV, n, d = key.shape
    st = getattr(editor, "decode_keys", None)
    if st is not None:
        buf, m = st
        if (m == n - 1 and m >= 1 and buf.shape[:2] == (b * KV, d) and buf.dtype == key.dtype
                and buf.device == key.device
                and torch.equal(buf[:, :, m - 1], key[:, :, m - 1].reshape(b * KV, d))):
            if n > buf.shape[2]:
                grown = buf.new_empty(b * KV, d, n + max(HEADROOM, n // 4))
                grown[:, :, :m] = buf[:, :, :m]
                buf = grown
            buf[:, :, m] = key[:, :, m].reshape(b * KV, d)
            editor.decode_keys = (buf, n)
            return buf[:, :, :n]
    buf = key.new_empty(b * KV, d, n + HEADROOM)
    buf[:, :, :n] = key.reshape(b * KV, n, d).transpose(1, 2)
    editor.decode_keys = (buf, n)
    return buf[:, :, :n]


def sparse_decode(editor, module, query, key, value, attention_mask, scaling, state):
    """``(attn_output [b, 1, heads, d_head], None)`` of one decode step under ``editor``'s
    attention top-k, gathering the kept keys' values only."""
    b, H, _, d = query.shape
    KV, n = key.shape[1], key.shape[2]
    G = H // KV
    # scores [b * H, n]: query head h reads key/value head h // G (as repeat_kv does); the scale
    # folded into the query (d_head products instead of n)
    editor.decode_steps = steps = getattr(editor, "decode_steps", 0) + 1
    if TRANSPOSED_KEYS and steps > TRANSPOSED_AFTER:
        s = torch.matmul((query * scaling).reshape(b * KV, G, d),
                         keys_t(editor, key)).view(b * H, n)
    else:
        s = torch.matmul((query * scaling).reshape(b, KV, G, d),
                         key.transpose(2, 3)).view(b * H, n)
    if s.dtype != torch.float32:
        s = s.float()
    masked = attention_mask is not None and _masks(attention_mask)
    if not masked and editor.op.mode == "statistical":
        got = _lean_keep(editor, s, H)
        if got is None:                                           # not acting: dense
            w = torch.softmax(s, -1).to(value.dtype).view(b, KV, G, n)
            return torch.matmul(w, value).view(b, 1, H, d).to(query.dtype), None
        flat, top = got
    else:
        if masked:
            s = (s.view(b, H, n) + attention_mask[:, :, -1, :n]).view(b * H, n)
        keep, _ = editor.keep(s.view(b, H, 1, n), state)
        flat = keep.view(-1).nonzero().view(-1)
        top = s.amax(-1, keepdim=True)                            # the top key is always kept
    e = torch.take(s.sub_(top), flat).exp_()
    # CSR rows: where each (batch, head) row's kept keys start in ``flat`` (row-major)
    crow = torch.searchsorted(flat, torch.arange(0, (b * H + 1) * n, n, device=s.device))
    if G == 1:
        src = flat                                                # row (batch, head) = kv row
    else:
        rows = flat // n
        src = ((rows // H) * KV + (rows % H) // G) * n + (flat - rows * n)
    # the value sum over the kept rows of the value cache: one weighted bag per (batch, head)
    out = F.embedding_bag(src, value.reshape(b * KV * n, d), crow, mode="sum",
                          per_sample_weights=e if value.dtype == e.dtype else e.to(value.dtype),
                          include_last_offset=True)
    den = torch.segment_reduce(e, "sum", offsets=crow).unsqueeze_(-1)
    out = out.div_(den if den.dtype == out.dtype else den.to(out.dtype)).view(b, 1, H, d)
    return (out if out.dtype == query.dtype else out.to(query.dtype)), None
