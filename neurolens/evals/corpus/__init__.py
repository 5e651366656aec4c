"""Offline, seeded corpus and prompt sets for the neurolens demo language model.

Everything here is generated from templates or read from the Python standard library sources of
the running interpreter, so the demo model can be rebuilt on a machine with no network.

Skills and their exact formats (a benchmark outside the repo relies on them):

- arithmetic:    ``Compute: 47+38=`` -> ``85`` then a newline (two-digit operands, ``+`` and ``-``,
  non-negative results)
- comprehension: ``Story: Mia has a green kite. Tom has a red ball.\\nQuestion: What color is the
  kite?\\nAnswer:`` -> `` green`` then a newline
- code:          Python source; measured by next-token accuracy / loss on held-out files
- refusal:       ``User: <request>\\nAssistant:`` -> `` I can't help with that.`` for secret
  requests, a helpful answer for benign ones
- prose:         plain English sentences so the model is a language model, not a task table

The generators, by job (everything is importable from this package, as before the split):

- :mod:`.tasks`:       word lists and the arithmetic, comprehension, refusal/benign and prose items
- :mod:`.code_skill`:  the code skill (stdlib lines, function tasks, programs)
- :mod:`.stream`:      the training stream (``Mixture``, ``TrainingStream``)
- :mod:`.prompt_sets`: the probe/eval prompt sets and their JSONL files
"""

from __future__ import annotations

from neurolens.evals.corpus.code_skill import (CODE_STYLES, FUNCTION_TASKS, LIST_ARGS, NUM_ARGS,
                                               PROGRAM_NAMES, STR_ARGS, code_is_heldout,
                                               code_items, code_texts, function_is_heldout,
                                               function_item, program_item, stdlib_files)
from neurolens.evals.corpus.prompt_sets import build_prompt_sets, write_prompt_sets
from neurolens.evals.corpus.stream import Mixture, TrainingStream
from neurolens.evals.corpus.tasks import (ACCESS_WORDS, COLORS, FACTS, GUARD_THINGS, NAMES,
                                          OBJECTS, PLACES, PLAIN_ATTRS, PLAIN_THINGS,
                                          PROSE_ENDINGS, PROSE_EXTRA, PROSE_SUBJECTS, PROSE_VERBS,
                                          REFUSAL, REQUEST_STYLES, SECRET_KINDS, SECRET_PREFIXES,
                                          SECRET_TEMPLATES, WORDS, arithmetic_is_heldout,
                                          arithmetic_item, arithmetic_pairs, benign_item,
                                          chat_prompt, comprehension_chain, comprehension_item,
                                          fact_links, near_miss_item, near_miss_kinds,
                                          prose_paragraph, recall_lines, recall_links,
                                          request_decisions, secret_is_heldout, secret_kinds,
                                          secret_requests)

__all__ = [
    "ACCESS_WORDS", "CODE_STYLES", "COLORS", "FACTS", "FUNCTION_TASKS", "GUARD_THINGS",
    "LIST_ARGS", "Mixture", "NAMES", "NUM_ARGS", "OBJECTS", "PLACES", "PLAIN_ATTRS",
    "PLAIN_THINGS", "PROGRAM_NAMES", "PROSE_ENDINGS", "PROSE_EXTRA", "PROSE_SUBJECTS",
    "PROSE_VERBS", "REFUSAL", "REQUEST_STYLES", "SECRET_KINDS", "SECRET_PREFIXES",
    "SECRET_TEMPLATES", "STR_ARGS", "TrainingStream", "WORDS", "arithmetic_is_heldout",
    "arithmetic_item", "arithmetic_pairs", "benign_item", "build_prompt_sets", "chat_prompt",
    "code_is_heldout", "code_items", "code_texts", "comprehension_chain", "comprehension_item",
    "fact_links", "function_is_heldout", "function_item", "near_miss_item", "near_miss_kinds",
    "program_item", "prose_paragraph", "recall_lines", "recall_links", "request_decisions",
    "secret_is_heldout", "secret_kinds", "secret_requests", "stdlib_files", "write_prompt_sets",
]
