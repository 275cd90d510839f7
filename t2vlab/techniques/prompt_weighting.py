r"""Weighted and long prompts: the syntaxes people type, and the rules that turn weights into text embeddings.

A prompt is read as fragments of text, each with a weight; every token of a fragment carries its weight;
the text encoder reads the tokens in chunks of 77 positions; a rule turns the weights into the
embeddings (B, 77 * chunks, D) that the UNet attends to.

Syntaxes (each parser returns [(text, weight), ...]):

    "a1111"   AUTOMATIC1111's stable-diffusion-webui, ``modules/prompt_parser.py`` (parse_prompt_attention):
              (word) x1.1, ((word)) x1.21, [word] x1/1.1, (word:1.4) x1.4, brackets nest by multiplying;
              \( \) \[ \] \\ are the characters themselves (a backslash before anything else vanishes);
              BREAK (upper case, a word of its own) ends the current 75-token chunk.
    "compel"  compel 2.5.1, ``compel/prompt_parser.py``: word+ x1.1 per "+", word- x0.9 per "-",
              (words)1.3, (words)++, "quoted words"0.8, groups nest by multiplying;
              ("a cat", "a dog").blend(0.7, 0.3) (a ``Blend``), ("a cat", "a dog").and(1, 0.5) (a ``Conjunction``).
    "plain"   no syntax: the text as typed.

Rules (z: the encoder's output for one chunk (77, D); w: each position's weight (77,), 1 at start/end/pad):

    "a1111"   ``modules/sd_hijack_clip.py`` + ``modules/sd_emphasis.py`` (the "Original" emphasis), per chunk:
                  z_w = z * w,   then   z_w <- z_w * mean(z) / mean(z_w)   (means over the chunk's 77 x D numbers)
    "compel"  ``compel/embeddings_provider.py`` with Compel's defaults (DownweightMode.MASK):
                  z_w = where(w == 1, z, e + (z - e) * w)                (e: the empty prompt's embedding)
              and for each fragment f of weight w_f < 1, z_f: the same, encoded with f's tokens hidden from
              attention (attention mask 0 there), blended in:
                  z = sum_k a_k z_k / sum_k a_k,   a_0 = 1 for z_w,   a_f = tan((1 - max(w_f, 1e-5)) * pi / 2)
              a Blend: sum_i b_i z_i / sum_i b_i (or sum_i b_i z_i with no_normalize); a Conjunction: each part
              e + (z_i - e) * c_i, side by side along the sequence.
    "plain"   today's numbers: ``encoder(tokenizer(prompt).input_ids)``.

Long prompts (A1111's rule, every syntax): the tokens are cut into chunks of 75; each chunk is framed the
way the tokenizer frames a short prompt ([start, <= 75 tokens, end, pad, ...], 77 positions), encoded on its
own, and the chunks are concatenated along the sequence. The UNet's cross-attention reads any length. A
prompt of <= 75 tokens is one chunk: today's embeddings, bit for bit. Within a batch, a prompt with fewer
chunks gets empty chunks ([start, end, pad, ...], weight 1: A1111's ``empty_chunk``); between the prompt and
the negative prompt, the shorter one is padded with the empty prompt's embedding, repeated (A1111's
``pad_cond_uncond``, compel's ``pad_conditioning_tensors_to_same_length``): ``pad_chunks``.

Where we deliberately differ:
  - Unbalanced brackets raise a ValueError that shows where (``strict=True``, the default). With
    ``strict=False`` they are read as the reference reads them: A1111 closes an open bracket at the end of
    the prompt and reads a stray closing one as text; compel reads a bracket it cannot match as text.
  - A1111 restores the mean over the whole batch of prompts it encodes together; here each prompt's chunk
    keeps its own mean (the same numbers for a batch of one, and a prompt does not depend on its neighbours).
  - A1111 moves the text after a comma that falls within 20 tokens of a chunk's end into the next chunk
    (``comma_padding_backtrack``); here chunks are exactly 75 tokens, so n tokens make ceil(n / 75) chunks.
  - A1111 reads a BREAK inside brackets as the word "BREAK" (its weight is no longer the -1 that marks a
    break); here it is a break wherever it stands.
  - compel cuts prompts at 75 tokens by default; here they are chunked: compel's ``truncate_long_prompts=
    False`` with ``SplitLongTextMode.BRUTAL`` (``truncate=True`` keeps the first chunk, with a warning).
  - compel reads a group glued to a word before it ("of(cat)1.2") and a group whose inside its grammar
    rejects ("(a - b)1.2") as plain text; here both are groups. compel's .swap(), .attend() and withLora()
    are refused with a ValueError. A1111's prompt editing ([a:b:0.5]), AND and textual-inversion names are
    not parsed (A1111 handles them before this step): they are text.
  - Chunks are padded with the tokenizer's own pad id (the published tokenizer's "!" = 0, which is what
    A1111 uses for SD 2.x and what compel reads from the same tokenizer).

The tokenizer and the text encoder are passed in (t2vlab's ``Tokenizer`` and ``CLIPTextEncoder``, duck
typed): the encoder is called as ``encoder(input_ids, attention_mask=..., clip_skip=...)``; no hook into
it is needed, both rules weight the encoder's output.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings

import torch

from ..checks import boolean, one_of

SYNTAXES = ("plain", "a1111", "compel")


# ----------------------------------------------------------------------------------- tokens and chunks
class Break:
    """A1111's BREAK in a list of fragments: the current chunk ends here and is padded."""

    def __repr__(self):
        return "BREAK"


BREAK = Break()


def token_ids(tokenizer, text: str) -> list[int]:
    """The ids of ``text``, without start and end tokens and without cutting: the tokenizer's BPE pieces
    (``Tokenizer.tokenize``) looked up in its vocabulary."""
    return list(tokenizer.tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)))


def frame(tokens: list[int], tokenizer) -> list[int]:
    """[start, tokens..., end, pad, ...]: one chunk of ``tokenizer.max_length`` (77) positions, framed the way
    the tokenizer frames a short prompt."""
    special = tokenizer.special_tokens
    pad = tokenizer.max_length - 2 - len(tokens)
    return [special["start"][1], *tokens, special["end"][1]] + [special["pad"][1]] * pad


def split_into_chunks(fragment_tokens: list, size: int = 75) -> list[list[tuple[int, int]]]:
    """Token lists, one per fragment (``BREAK`` for a break) -> chunks of at most ``size`` (fragment, id) pairs.

    A1111's rule: a chunk closes when it is full and another token comes, or at a BREAK (even when empty);
    the last chunk is kept when it holds tokens or is the only one (an empty prompt is one empty chunk).
    """
    chunks, current = [], []
    for f, tokens in enumerate(fragment_tokens):
        if tokens is BREAK:
            chunks.append(current)
            current = []
            continue
        for t in tokens:
            if len(current) == size:
                chunks.append(current)
                current = []
            current.append((f, t))
    if current or not chunks:
        chunks.append(current)
    return chunks


@dataclasses.dataclass
class Chunks:
    """One prompt as the text encoder reads it: n chunks of 77 positions."""

    ids: torch.Tensor       # (n, 77) long: [start, up to 75 tokens, end, pad, ...] per chunk
    weights: torch.Tensor   # (n, 77) float32: each token's weight; 1 at start, end and pad
    fragment: torch.Tensor  # (n, 77) long: the fragment each token comes from; -1 at start, end and pad

    def __len__(self):
        return self.ids.shape[0]


def chunk_prompt(fragments: list, tokenizer) -> Chunks:
    """[(text, weight) or BREAK, ...] -> Chunks: each fragment tokenized on its own (as A1111 and compel do),
    the tokens cut into chunks of 75 (``split_into_chunks``), each chunk framed (``frame``)."""
    size = tokenizer.max_length - 2
    chunks = split_into_chunks([f if f is BREAK else token_ids(tokenizer, f[0]) for f in fragments], size)
    ids, weights, owner = [], [], []
    for chunk in chunks:
        rest = size - len(chunk) + 1  # the end token and the padding
        ids.append(frame([t for _, t in chunk], tokenizer))
        weights.append([1.0] + [fragments[f][1] for f, _ in chunk] + [1.0] * rest)
        owner.append([-1] + [f for f, _ in chunk] + [-1] * rest)
    return Chunks(torch.tensor(ids), torch.tensor(weights, dtype=torch.float32), torch.tensor(owner))


def stack_chunks(prompts: list[Chunks], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of prompts -> ids and weights (B, n, 77), n the most chunks of any; the others are filled
    with empty chunks ([start, end, pad, ...], weight 1), as A1111 fills a batch."""
    n, length = max(len(c) for c in prompts), tokenizer.max_length
    empty = torch.tensor(frame([], tokenizer))
    ids = torch.stack([torch.cat([c.ids, empty.expand(n - len(c), length)]) for c in prompts])
    weights = torch.stack([torch.cat([c.weights, torch.ones(n - len(c), length)]) for c in prompts])
    return ids, weights


def keep_first_chunk(chunks: Chunks, tokenizer, prompt: str) -> Chunks:
    """The old way (``truncate=True``): only the first chunk, with a warning naming what was cut."""
    if len(chunks) == 1:
        return chunks
    dropped = tokenizer.decode(chunks.ids[1:].flatten().tolist())
    warnings.warn(f"prompt {prompt[:40]!r}... is longer than one chunk of {tokenizer.max_length - 2} tokens "
                  f"and truncate=True; dropped: {dropped!r}", stacklevel=3)
    return Chunks(chunks.ids[:1], chunks.weights[:1], chunks.fragment[:1])


def _syntax_error(prompt: str, index: int, what: str, hint: str = "") -> ValueError:
    return ValueError(f"prompt: {what} at character {index}:\n    {prompt}\n    {' ' * index}^{hint}")


_BRACKET_HINT = ("\n(escape it for the character itself: {escapes}; "
                 "or pass strict=False to read it as {ref} does: {how})")


# ------------------------------------------------------------------------------------- A1111's syntax
A1111_ROUND = 1.1          # (word)
A1111_SQUARE = 1 / 1.1     # [word]: multiplied by 1/1.1, as A1111 does (not divided by 1.1: the last bit differs)
_A1111_WEIGHT = re.compile(r":\s*([+-]?[.\d]+)\s*\)")  # the end of (word:1.4)
_A1111_TEXT = re.compile(r"[^\\()\[\]:]+")              # a run of text without syntax
_A1111_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_A1111_HINT = _BRACKET_HINT.format(escapes=r"\( \) \[ \]", ref="A1111",
                                   how="an open bracket closes at the end of the prompt, a stray closing one is text")


def parse_a1111(prompt: str, strict: bool = True) -> list:
    r"""sd-webui's emphasis syntax -> [(text, weight) or BREAK, ...].

        >>> parse_a1111("a (red:1.3) cat, [blurry] BREAK ((sharp))")
        [('a ', 1.0), ('red', 1.3), (' cat, ', 1.0), ('blurry', 0.9090909090909091), ('', 1.0), BREAK,
         ('', 1.0), ('sharp', 1.2100000000000002)]

    A bracket multiplies the weight of everything between it and its closing bracket: "(" ")" by 1.1,
    "[" "]" by 1/1.1, "(" ... ":1.4)" by 1.4; round and square brackets are counted separately (A1111 keeps
    one stack for each). Neighbouring fragments of equal weight are merged. ``strict=False``: unbalanced
    brackets as A1111 reads them (an open one closes at the end of the prompt, a stray closing one is text).
    """
    boolean("strict", strict)
    if not isinstance(prompt, str):
        raise TypeError(f"prompt: expected a string, got {type(prompt).__name__}")
    pieces = []                   # [text, weight] lists and BREAKs, in order
    opened = {"(": [], "[": []}   # per kind, each open bracket: (index into pieces, character index)

    def multiply(start, factor):
        for piece in pieces[start:]:
            if piece is not BREAK:
                piece[1] *= factor

    def close(kind, at, factor):
        if opened[kind]:
            multiply(opened[kind].pop()[0], factor)
            return True
        if strict:
            raise _syntax_error(prompt, at, f"unbalanced bracket: {prompt[at]!r} closes no {kind!r}", _A1111_HINT)
        return False

    i = 0
    while i < len(prompt):
        c = prompt[i]
        if c == "\\":  # \( \) \[ \] \\ are the characters; a backslash before anything else vanishes
            escaped = prompt[i + 1:i + 2]
            if escaped and escaped in "()[]\\":
                pieces.append([escaped, 1.0])
            i += 2 if escaped and escaped in "()[]\\" else 1
        elif c in "([":
            opened[c].append((len(pieces), i))
            i += 1
        elif c == ":" and (m := _A1111_WEIGHT.match(prompt, i)):  # (word:1.4)
            weight = _a1111_number(m.group(1), prompt, m.start(1)) if opened["("] else None
            if not close("(", m.end() - 1, weight):
                pieces.append([m.group(0), 1.0])  # no "(" open: A1111 reads ":1.4)" as text
            i = m.end()
        elif c in ")]":
            if not close("(" if c == ")" else "[", i, A1111_ROUND if c == ")" else A1111_SQUARE):
                pieces.append([c, 1.0])
            i += 1
        else:  # text (a lone ":" included); BREAK splits it
            run = _A1111_TEXT.match(prompt, i)
            text, i = (run.group(0), run.end()) if run else (c, i + 1)
            for k, part in enumerate(_A1111_BREAK.split(text)):
                pieces.extend([BREAK, [part, 1.0]] if k else [[part, 1.0]])
    unclosed = sorted((at, kind) for kind in opened for _, at in opened[kind])
    if unclosed and strict:
        at, kind = unclosed[0]
        raise _syntax_error(prompt, at, f"unbalanced bracket: {kind!r} is never closed", _A1111_HINT)
    for kind, factor in (("(", A1111_ROUND), ("[", A1111_SQUARE)):  # A1111: open brackets close at the end
        for start, _ in opened[kind]:
            multiply(start, factor)
    return _merge_equal_weights(pieces or [["", 1.0]])


def _a1111_number(text, prompt, at) -> float:
    try:
        return float(text)
    except ValueError:
        raise _syntax_error(prompt, at, f"the weight {text!r} is not a number") from None


def _merge_equal_weights(pieces) -> list:
    merged = []
    for piece in pieces:
        if piece is not BREAK and merged and merged[-1] is not BREAK and merged[-1][1] == piece[1]:
            merged[-1] = (merged[-1][0] + piece[0], piece[1])
        else:
            merged.append(piece if piece is BREAK else tuple(piece))
    return merged


# ------------------------------------------------------------------------------------ compel's syntax
COMPEL_PLUS = 1.1   # word+ , (words)+ : per "+"
COMPEL_MINUS = 0.9  # word- , (words)- : per "-"
_COMPEL_SYNTAX = '()",.+-='                     # characters compel's words may not hold unescaped
_COMPEL_NUMBER = re.compile(r"\d+\.\d*|\.\d+|\d+")  # a weight after a group: 1.3, .5, 2
_COMPEL_OPERATOR = re.compile(r"\.(blend|and|add)\(([^()]*)\)")
_COMPEL_UNSUPPORTED = re.compile(r"\.(swap|attend)\(|\b(withLora|useLora)\(")
_COMPEL_HINT = _BRACKET_HINT.format(escapes=r'\( \) \"', ref="compel", how="as text")


@dataclasses.dataclass
class Blend:
    """compel's ``("a cat", "a dog").blend(0.7, 0.3)``: the prompts' embeddings mixed, sum_i b_i z_i / sum_i b_i
    (``normalize=False``, written ``no_normalize``: sum_i b_i z_i)."""

    prompts: list   # each a list of (text, weight) fragments
    weights: list   # b_i
    normalize: bool = True


@dataclasses.dataclass
class Conjunction:
    """compel's ``("a cat", "a dog").and(1, 0.5)``: the prompts' embeddings side by side along the sequence,
    each weighted against the empty prompt's."""

    prompts: list   # each a list of (text, weight) fragments
    weights: list   # c_i


def parse_compel(prompt: str, strict: bool = True):
    """compel's syntax -> [(text, weight), ...], or a ``Blend`` / ``Conjunction`` of such lists.

        >>> parse_compel('a (red cat)1.3 on a mat--')
        [('a', 1.0), ('red cat', 1.3), ('on a', 1.0), ('mat', 0.81)]

    Words are split at whitespace and joined back with one space; a comma is followed by a space (compel's
    first step); inside a group "," and "." stand alone. Neighbouring fragments of equal weight are merged.
    ``strict=False``: an unbalanced bracket or quote is text, as compel reads it.
    """
    boolean("strict", strict)
    if not isinstance(prompt, str):
        raise TypeError(f"prompt: expected a string, got {type(prompt).__name__}")
    if m := _COMPEL_UNSUPPORTED.search(prompt):
        raise ValueError(f"prompt: compel's {m.group(0)}...) is not supported here (at character {m.start()}); "
                         "write the weight as (words)1.2 or words++")
    text = re.sub(r",(\S)", r", \1", prompt).strip()  # compel's first step: a space after each comma
    if not text:
        return [("", 1.0)]
    operator = _compel_operator(text, strict)
    if operator is not None:
        return operator
    return _CompelReader(text, strict).fragments(inner=False)


def _compel_operator(text, strict):
    """``(a, b, ...).blend(weights)`` / ``.and(weights)`` (``.add`` is compel's other name for and), else None."""
    if not text.startswith("("):
        return None
    close = _matching_bracket(text)
    m = _COMPEL_OPERATOR.fullmatch(text, close + 1) if close is not None else None
    if m is None:
        return None
    targets = [_CompelReader(t.strip(), strict).fragments(inner=True) for t in _split_targets(text[1:close])]
    args = [a.strip() for a in m.group(2).split(",") if a.strip()]
    normalize = not (m.group(1) == "blend" and args and args[-1] == "no_normalize")
    args = args if normalize else args[:-1]
    try:
        weights = [float(a) for a in args] or [1.0] * len(targets)
    except ValueError:
        raise ValueError(f"prompt: .{m.group(1)}() takes numbers (and, for blend, a last no_normalize), "
                         f"got {m.group(2)!r}") from None
    if len(weights) != len(targets):
        raise ValueError(f"prompt: .{m.group(1)}() got {len(weights)} weights for {len(targets)} prompts")
    return Blend(targets, weights, normalize) if m.group(1) == "blend" else Conjunction(targets, weights)


def _unquoted(text):
    """(index, character, bracket depth after it) of each character of ``text`` outside escapes and quotes."""
    depth, quoted, k = 0, False, 0
    while k < len(text):
        c = text[k]
        if c == "\\":
            k += 2
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted:
            depth += (c == "(") - (c == ")")
            yield k, c, depth
        k += 1


def _matching_bracket(text):
    """Index of the ")" that closes text[0] == "(", skipping escapes and quoted text; None when none does."""
    return next((k for k, c, depth in _unquoted(text) if c == ")" and depth == 0), None)


def _split_targets(inner):
    """The comma-separated prompts of a blend or and, commas inside brackets and quotes kept."""
    cuts = [k for k, c, depth in _unquoted(inner) if c == "," and depth == 0]
    return [inner[i + 1:j] for i, j in zip([-1, *cuts], [*cuts, len(inner)])]


class _CompelReader:
    """compel's prompt grammar, read left to right into a tree: a node is a word (str) or a weighted group
    (weight, [nodes]); ``fragments`` flattens the tree (weights multiply inwards) and merges equal weights."""

    def __init__(self, text, strict):
        self.text, self.strict = text, strict

    def fragments(self, inner):
        nodes, _ = self.items(0, None, inner)
        return _fuse(_flatten(nodes, 1.0, [])) or [("", 1.0)]

    def items(self, i, closer, inner):
        """The nodes from character i up to ``closer`` (or the end when None): (nodes, index of the closer),
        or None when the closer never comes."""
        s, nodes = self.text, []
        while i < len(s):
            c = s[i]
            if c.isspace():
                i += 1
            elif c == closer:
                return nodes, i
            elif c in '("':
                group = self.group(i)
                if group is None:  # never closed, strict=False: the character is text (compel's reading)
                    word, i = self.word(i + 1, inner, start=i)
                    nodes.extend(_weighted_words(word))
                else:
                    node, i = group
                    nodes.append(node)
            elif c == ")":  # closes nothing here
                if self.strict:
                    raise _syntax_error(s, i, "unbalanced bracket: ')' closes no '('", _COMPEL_HINT)
                word, i = self.word(i + 1, inner, start=i)
                nodes.extend(_weighted_words(word))
            else:
                word, i = self.word(i, inner)
                nodes.extend(_weighted_words(word))
        return None if closer is not None else (nodes, i)

    def group(self, i):
        """(words) or "words" at character i, with the weight written right after it: +..., -... or a number."""
        s = self.text
        found = self.items(i + 1, ")" if s[i] == "(" else '"', inner=True)
        if found is None:
            if self.strict:
                what = "bracket" if s[i] == "(" else "quote"
                raise _syntax_error(s, i, f"unbalanced {what}: {s[i]!r} is never closed", _COMPEL_HINT)
            return None
        nodes, j = found[0], found[1] + 1
        if j < len(s) and s[j] in "+-":
            k = j
            while k < len(s) and s[k] == s[j]:
                k += 1
            return ((COMPEL_PLUS if s[j] == "+" else COMPEL_MINUS) ** (k - j), nodes), k
        if m := _COMPEL_NUMBER.match(s, j):
            return (float(m.group(0)), nodes), m.end()
        return (1.0, nodes), j

    def word(self, i, inner, start=None):
        """The word at character i (from ``start`` when its first character is text): up to whitespace or an
        unescaped ( ) ", and inside a group "," and "." are words of their own."""
        s, j = self.text, i
        start = i if start is None else start
        while j < len(s):
            c = s[j]
            if c == "\\" and j + 1 < len(s):
                j += 2
                continue
            if c.isspace() or c in '()"':
                break
            if inner and c in ",.":
                j += j == start
                break
            j += 1
        return s[start:j], j


def _weighted_words(word):
    """word+ / word- : a run of "+" or "-" that ends the word (or comes before a syntax character) weighs
    the text before it, when that text holds no syntax: "cat++" -> (1.21, ["cat"]); "x-ray" stays a word."""
    out, start, i = [], 0, 0
    while i < len(word):
        c = word[i]
        if c == "\\":
            i += 2
            continue
        ends = i + 1 == len(word) or word[i + 1] in _COMPEL_SYNTAX
        if c in "+-" and ends and i > start and _free_of_syntax(word[start:i]):
            j = i
            while j < len(word) and word[j] == c:
                j += 1
            out.append(((COMPEL_PLUS if c == "+" else COMPEL_MINUS) ** (j - i), [word[start:i]]))
            start = i = j
            continue
        i += 1
    return out + ([word[start:]] if start < len(word) else [])


def _free_of_syntax(text):
    k = 0
    while k < len(text):
        if text[k] == "\\":
            k += 2
        elif text[k] in '()",.=':
            return False
        else:
            k += 1
    return True


def _flatten(nodes, scale, out):
    for node in nodes:
        if isinstance(node, str):  # compel turns \( \) \" into the characters (its Fragment does)
            out.append((node.replace("\\(", "(").replace("\\)", ")").replace('\\"', '"'), scale))
        else:
            _flatten(node[1], scale * node[0], out)
    return out


def _fuse(fragments):
    fused = []
    for text, weight in fragments:
        if fused and fused[-1][1] == weight:
            fused[-1] = (fused[-1][0] + " " + text, weight)
        else:
            fused.append((text, weight))
    return fused


# -------------------------------------------------------------------------------------------- the rules
# a float32 mean of 77 x D numbers is off by about 1e-7 of their size: a mean under 1e-6 of it is no mean at all
ZERO_MEAN = 1e-6


def a1111_emphasis(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111's "Original" emphasis on encoded chunks: z (..., 77, D), weights (..., 77) -> (..., 77, D).

        z_w = z * w;   z_w * mean(z) / mean(z_w)      (the means over each chunk's 77 x D numbers)

    An encoder whose last LayerNorm has a zero bias and unit scale (the tiny checkpoint's) gives every token a mean
    of 0, so the ratio would be 0 / 0 or rounding noise. Hence: a chunk with every weight 1 is passed through as it
    is (z * 1 = z, bit for bit), and a weighted chunk whose mean(z_w) is at most ZERO_MEAN times its mean absolute
    value keeps z_w unrestored (the toy's trained encoder, at 1e-4 to 1e-3 of it, is restored).
    """
    z32 = z.float()
    w = weights.to(z32.device)
    weighted = z32 * w[..., None]
    mean_w = weighted.mean(dim=(-2, -1), keepdim=True)
    restore = z32.mean(dim=(-2, -1), keepdim=True) / mean_w
    unweighted = (w == 1).all(dim=-1)[..., None, None]  # (..., 1, 1): chunks with every weight 1
    no_mean = mean_w.abs() <= ZERO_MEAN * weighted.abs().mean(dim=(-2, -1), keepdim=True)
    return torch.where(unweighted, z32, torch.where(no_mean, weighted, weighted * restore)).to(z.dtype)


def compel_weighting(z: torch.Tensor, weights: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
    """compel's token weighting (``build_weighted_embedding_tensor``): z (..., 77, D), weights (..., 77),
    empty (77, D) the empty prompt's embedding ->

        where(w == 1, z, e + (z - e) * w)        (each token moved away from, or towards, the empty prompt)
    """
    w = weights.to(z.device)[..., None]
    return torch.where(w == 1, z, empty + (z - empty) * w)


def compel_downweight_blend(terms: list[torch.Tensor], lerp: list[float]) -> torch.Tensor:
    """compel's blend of z_w with the embeddings that lack each down-weighted fragment (``apply_embedding_weights``
    with normalize): sum_k (a_k / sum_j a_j) z_k."""
    a = torch.tensor(lerp, dtype=terms[0].dtype, device=terms[0].device)
    a = a / a.sum()
    return (torch.stack(terms) * a.reshape(-1, *[1] * terms[0].ndim)).sum(0)


def downweight_lerp(weight: float) -> float:
    """compel's blend weight for a fragment of weight w < 1: tan((1 - max(w, 1e-5)) * pi / 2) (0 at w = 1,
    1 at w = 0.5: half-way to the prompt without it, infinite at w = 0: the prompt without it)."""
    return math.tan((1.0 - max(1e-5, weight)) * math.pi / 2)


# ------------------------------------------------------------------------------------------ encoding
def _encode(encoder, ids, clip_skip, attention_mask=None):
    """encoder(ids) on the encoder's device, as the pipeline calls it (no mask unless one is given)."""
    device = next(encoder.parameters()).device
    if attention_mask is None:
        return encoder(ids.to(device), clip_skip=clip_skip)
    return encoder(ids.to(device), attention_mask=attention_mask.to(device), clip_skip=clip_skip)


def empty_prompt_embeds(tokenizer, text_encoder, clip_skip=None) -> torch.Tensor:
    """The empty prompt's embedding (1, 77, D): what pads a shorter prompt or negative prompt."""
    return _encode(text_encoder, tokenizer([""]).input_ids, clip_skip)


def pad_chunks(embeds: list[torch.Tensor], empty: torch.Tensor) -> list[torch.Tensor]:
    """Embeddings (B, 77 * n_i, D) -> all (B, 77 * max n_i, D): the shorter ones padded with the empty
    prompt's embedding ``empty`` (1, 77, D), repeated, as A1111 (``pad_cond_uncond``) and compel
    (``pad_conditioning_tensors_to_same_length``) pad a negative prompt."""
    length = max(e.shape[1] for e in embeds)
    out = []
    for e in embeds:
        if (length - e.shape[1]) % empty.shape[1]:
            raise ValueError(f"embeddings of {e.shape[1]} positions cannot be padded to {length} with chunks of "
                             f"{empty.shape[1]}")
        repeats = (length - e.shape[1]) // empty.shape[1]
        pad = empty.to(device=e.device, dtype=e.dtype).expand(e.shape[0], -1, -1).repeat(1, repeats, 1)
        out.append(torch.cat([e, pad], dim=1))
    return out


def encode_plain(prompts, tokenizer, text_encoder, clip_skip=None, truncate=False) -> torch.Tensor:
    """No syntax: (B, 77 * n, D). Prompts of <= 75 tokens (or ``truncate=True``, the old way: the tokenizer
    cuts at 77 and warns what it dropped) are today's call, ``encoder(tokenizer(prompts).input_ids)``."""
    size = tokenizer.max_length - 2
    if truncate or all(len(token_ids(tokenizer, p)) <= size for p in prompts):
        return _encode(text_encoder, tokenizer(prompts).input_ids, clip_skip)
    ids, _ = stack_chunks([chunk_prompt([(p, 1.0)], tokenizer) for p in prompts], tokenizer)
    return _encode(text_encoder, ids.flatten(0, 1), clip_skip).unflatten(0, ids.shape[:2]).flatten(1, 2)


def encode_a1111(prompts, tokenizer, text_encoder, clip_skip=None, strict=True, truncate=False) -> torch.Tensor:
    """A1111's syntax and rule: every prompt's chunks encoded in one batch, then ``a1111_emphasis`` per chunk."""
    chunks = [chunk_prompt(parse_a1111(p, strict=strict), tokenizer) for p in prompts]
    if truncate:
        chunks = [keep_first_chunk(c, tokenizer, p) for c, p in zip(chunks, prompts)]
    ids, weights = stack_chunks(chunks, tokenizer)                                # (B, n, 77)
    z = _encode(text_encoder, ids.flatten(0, 1), clip_skip).unflatten(0, ids.shape[:2])  # (B, n, 77, D)
    return a1111_emphasis(z, weights).flatten(1, 2)


def _compel_fragments(prompts, fragment_lists, tokenizer, text_encoder, empty, clip_skip, truncate):
    """compel's rule for prompts that are lists of fragments: (B, 77 * n, D)."""
    chunks = [chunk_prompt(f, tokenizer) for f in fragment_lists]
    if truncate:
        chunks = [keep_first_chunk(c, tokenizer, p) for c, p in zip(chunks, prompts)]
    ids, weights = stack_chunks(chunks, tokenizer)
    z = _encode(text_encoder, ids.flatten(0, 1), clip_skip).unflatten(0, ids.shape[:2])  # (B, n, 77, D)
    e = empty[0].to(torch.float32)
    out = compel_weighting(z.float(), weights, e)
    for b, (c, fragments) in enumerate(zip(chunks, fragment_lists)):
        n, terms, lerp = len(c), [out[b, :len(c)]], [1.0]
        for f, (_, weight) in enumerate(fragments):
            hidden = c.fragment == f
            if weight < 1 and hidden.any():  # the prompt without fragment f: its tokens masked out of attention
                z_f = _encode(text_encoder, c.ids, clip_skip, attention_mask=(~hidden).long()).float()
                terms.append(compel_weighting(z_f, c.weights, e))
                lerp.append(downweight_lerp(weight))
        if len(terms) > 1:
            out[b, :n] = compel_downweight_blend(terms, lerp)
    return out.flatten(1, 2).to(z.dtype)


def compel_embeds(parsed, tokenizer, text_encoder, empty, clip_skip=None, truncate=False, prompt="") -> torch.Tensor:
    """compel's rule for one parsed prompt (fragments, ``Blend`` or ``Conjunction``): (1, 77 * n, D)."""
    def one(fragments):
        return _compel_fragments([prompt], [fragments], tokenizer, text_encoder, empty, clip_skip, truncate)

    if isinstance(parsed, Blend):
        parts = torch.stack(pad_chunks([one(p) for p in parsed.prompts], empty)).float()  # (k, 1, L, D)
        b = torch.tensor(parsed.weights, dtype=torch.float32, device=parts.device)
        b = b / b.sum() if parsed.normalize else b
        return (parts * b[:, None, None, None]).sum(0).to(empty.dtype)
    if isinstance(parsed, Conjunction):
        parts = []
        for fragments, c in zip(parsed.prompts, parsed.weights):
            z = one(fragments)
            if c != 1:  # e + (z - e) * c, e the empty prompt's embedding repeated to z's length
                e = empty.repeat(1, z.shape[1] // empty.shape[1], 1)
                z = e + (z - e) * c
            parts.append(z)
        return torch.cat(parts, dim=1)
    return one(parsed)


def encode_compel(prompts, tokenizer, text_encoder, clip_skip=None, strict=True, truncate=False) -> torch.Tensor:
    """compel's syntax and rule: (B, 77 * n, D); prompts without blend or and are encoded in one batch."""
    parsed = [parse_compel(p, strict=strict) for p in prompts]
    empty = empty_prompt_embeds(tokenizer, text_encoder, clip_skip)
    if all(isinstance(p, list) for p in parsed):
        return _compel_fragments(prompts, parsed, tokenizer, text_encoder, empty, clip_skip, truncate)
    each = [compel_embeds(q, tokenizer, text_encoder, empty, clip_skip, truncate, p) for q, p in zip(parsed, prompts)]
    return torch.cat(pad_chunks(each, empty))


ENCODERS = {"plain": encode_plain, "a1111": encode_a1111, "compel": encode_compel}


def _prompt_list(name, value, batch=None):
    if isinstance(value, str):
        return [value] * (batch or 1)
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(p, str) for p in value):
        raise TypeError(f"{name}: expected a string or a non-empty list of strings, got {value!r:.80}")
    if batch is not None and len(value) != batch:
        raise ValueError(f"{name}: got {len(value)} prompts for {batch} prompts")
    return list(value)


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompt, negative_prompt=None, *, prompt_syntax="plain",
                   clip_skip=None, strict=True, truncate=False):
    """``(prompt_embeds, negative_prompt_embeds)``, each (B, 77 * n, D) with the same n, for the pipelines'
    ``prompt_embeds=`` / ``negative_prompt_embeds=``; the negative is None when ``negative_prompt`` is None.

    ``prompt_syntax``: "plain" (today's numbers), "a1111" or "compel" (see the module docstring); the
    negative prompt is read with the same syntax. ``strict``: unbalanced brackets raise (False: read as the
    reference reads them). ``truncate``: the old way, one chunk per prompt and a warning naming what was cut.
    """
    one_of("prompt_syntax", prompt_syntax, SYNTAXES)
    boolean("strict", strict)
    boolean("truncate", truncate)
    prompts = _prompt_list("prompt", prompt)
    kwargs = dict(clip_skip=clip_skip, truncate=truncate, **({} if prompt_syntax == "plain" else {"strict": strict}))
    encode = ENCODERS[prompt_syntax]
    embeds = encode(prompts, tokenizer, text_encoder, **kwargs)
    if negative_prompt is None:
        return embeds, None
    negative = encode(_prompt_list("negative_prompt", negative_prompt, len(prompts)), tokenizer, text_encoder, **kwargs)
    if negative.shape[1] != embeds.shape[1]:
        embeds, negative = pad_chunks([embeds, negative], empty_prompt_embeds(tokenizer, text_encoder, clip_skip))
    return embeds, negative
