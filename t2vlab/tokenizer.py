"""The tokenizer: prompt -> token ids, the first half of the text side.

    "a photo of a cat" --Tokenizer--> [49406, 320, 1125, 539, 320, 2368, 49407, 0, 0, ...]  (B, 77)

(``t2vlab.text_encoder`` takes the ids on to the context the UNet attends to.)

The tokenizer is CLIP's byte-pair encoding (BPE): text is lower-cased, split into words, each
word's UTF-8 bytes are merged pairwise by a ranked list of merges learnt from data; ``</w>`` marks
the end of a word. Every prompt is framed by ``<|startoftext|>`` and ``<|endoftext|>`` and cut or
padded to 77 positions, the text encoder's length. We wrap transformers' ``CLIPTokenizer`` for the
splitting and merging; the real 49,408-token vocabulary is built here from OpenAI's merges file,
shipped in ``t2vlab/data/`` (MIT licence, see ``CLIP-LICENSE.txt``).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import html
import json
import re
import warnings
from pathlib import Path

import torch

from .atomic import write_text
from .checkpoint import CheckpointError

DATA = Path(__file__).resolve().parent / "data"
BPE_MERGES_FILE = DATA / "bpe_simple_vocab_16e6.txt.gz"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
N_MERGES = 49152 - 256 - 2  # the merges CLIP keeps: 48,894 of the file's 262,144
MAX_LENGTH = 77


# ------------------------------------------------------------------------------------- vocabulary
def bytes_to_unicode() -> dict[int, str]:
    """The byte -> character table of byte-level BPE (GPT-2, CLIP).

    Each of the 256 byte values gets one visible character, so any UTF-8 text is a string of
    vocabulary symbols: the 188 printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves,
    the other 68 (space, control characters, ...) become chr(256), chr(257), ... in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


@functools.lru_cache(maxsize=2)
def clip_vocab_and_merges(path=BPE_MERGES_FILE) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary, built from its merges file the way CLIP builds it.

    ids 0..255 the byte symbols, 256..511 the same with ``</w>`` (a word's last symbol), then one
    token per merge in rank order (48,894 merges: file lines 1..48894, line 0 is a header), then
    ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407): 49,408 tokens.
    """
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1:1 + N_MERGES]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != 49408 or any(len(m) != 2 for m in merges):
        raise CheckpointError(f"{path}: not CLIP's merges file (built {len(vocab)} tokens, expected 49408)")
    return vocab, merges


def token_text(token: str) -> str:
    """A vocabulary symbol as text: 'cafÃ©</w>' -> 'café '. A piece of a multi-byte character
    (BPE may split one) shows as U+FFFD."""
    if token in (BOS, EOS):
        return token
    word_end = token.endswith("</w>")
    raw = bytes(_UNICODE_TO_BYTE.get(ch, 63) for ch in token.removesuffix("</w>"))  # 63: "?"
    return raw.decode("utf-8", errors="replace") + (" " if word_end else "")


_UNICODE_TO_BYTE = {ch: b for b, ch in bytes_to_unicode().items()}


# -------------------------------------------------------------------------------------- tokenizer
@dataclasses.dataclass
class TokenizedPrompts:
    """What the tokenizer returns: ids and mask (B, 77), and what each prompt lost to truncation."""

    input_ids: torch.Tensor       # LongTensor (B, 77)
    attention_mask: torch.Tensor  # LongTensor (B, 77): 1 for real tokens (with start/end), 0 for padding
    dropped: list[str]            # per prompt, the text cut off at 77 tokens ("" when nothing was)

    def __getitem__(self, key):   # also usable like the dict transformers returns: out["input_ids"]
        return getattr(self, key)


@dataclasses.dataclass
class Explanation:
    """One prompt, token by token, for reading in a notebook (``print(tok.explain(prompt))``)."""

    prompt: str
    tokens: list[str]   # what the encoder sees, start and end tokens included, padding left out
    ids: list[int]
    pieces: list[str]   # each token as readable text: bytes decoded, "</w>" (end of word) as a space
    padding: int        # how many pad tokens fill the 77 positions
    dropped: str        # the cut-off text ("" when the prompt fits)
    special: dict       # role -> (token, id)

    def __str__(self):
        lines = [f"{len(self.tokens)} tokens + {self.padding} x pad: " + " | ".join(self.tokens)]
        if self.dropped:
            lines.append(f"dropped (beyond {len(self.tokens) + self.padding} positions): {self.dropped!r}")
        lines.append("special tokens: " + ", ".join(f"{k} {t!r}={i}" for k, (t, i) in self.special.items()))
        return "\n".join(lines)


def open_clip_clean(text: str) -> str:
    """OpenCLIP's text cleaning before BPE, as far as it changes well-formed text: HTML entities decoded
    (twice, as OpenCLIP does: "&amp;amp;" -> "&"), curly quotes made straight (ftfy's ``uncurl_quotes``:
    U+02BC, U+2018..U+201B -> "'", U+201C..U+201F -> '"'), whitespace runs -> one space, trimmed.
    ftfy's repair of mis-decoded text (mojibake) is not reproduced."""
    text = html.unescape(html.unescape(text))
    text = re.sub("[\u02bc\u2018-\u201b]", "'", re.sub("[\u201c-\u201f]", '"', text))
    return re.sub(r"\s+", " ", text).strip()


class Tokenizer:
    """Prompts -> (B, 77) ids and attention mask: transformers' ``CLIPTokenizer``, called as the
    reference pipeline calls it (pad to max length, truncate), plus explanations for the notebooks.

    ``Tokenizer.open_clip()`` tokenizes as OpenCLIP (and so the original ModelScope pipeline) does: the
    same vocabulary and merges, padding with id 0, but a "!" in the prompt is text. (The published
    folders name "!" (id 0) as the pad token, and transformers then cuts every "!" out of a prompt as
    that special token: "wow!!!" -> "wow</w>", "!", "!", "!" where OpenCLIP has "wow</w>", "!!!</w>".)
    """

    def __init__(self, clip_tokenizer, max_length=None, pad_id=None, clean=None):
        self.tokenizer = clip_tokenizer
        length = max_length or clip_tokenizer.model_max_length
        self.max_length = length if 2 < length <= 4096 else MAX_LENGTH  # "unlimited" sentinel -> 77
        self.pad_id, self.clean = pad_id, clean  # OpenCLIP's way: see open_clip()

    @classmethod
    def default(cls, max_length=MAX_LENGTH):
        """CLIP's real vocabulary from the shipped merges file, padding with "!" (id 0) like the
        OpenCLIP / SD 2.x tokenizer folders (ms-1.7b's included)."""
        from transformers import CLIPTokenizer  # imported here: transformers takes seconds to import

        vocab, merges = clip_vocab_and_merges()
        tok = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token="!",
                            model_max_length=max_length)
        return cls(tok, max_length)

    @classmethod
    def open_clip(cls, max_length=MAX_LENGTH):
        """CLIP's real vocabulary, tokenizing as OpenCLIP does (see the class docstring): the end token
        stands in as transformers' pad token, and padding positions are then given id 0."""
        from transformers import CLIPTokenizer  # imported here: transformers takes seconds to import

        vocab, merges = clip_vocab_and_merges()
        tok = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=EOS, model_max_length=max_length)
        return cls(tok, max_length, pad_id=0, clean=open_clip_clean)

    @classmethod
    def from_pretrained(cls, path, subfolder="tokenizer"):
        """Load a checkpoint's tokenizer folder: ``vocab.json`` + ``merges.txt`` (as published) or
        ``tokenizer.json`` (as transformers 5 writes it). The folder's own pad token is kept."""
        from transformers import CLIPTokenizer  # imported here: transformers takes seconds to import

        folder = Path(path) / subfolder if subfolder else Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer folder not found: {folder}")
        files = {p.name for p in folder.iterdir()}
        if "tokenizer.json" not in files and not {"vocab.json", "merges.txt"} <= files:
            raise FileNotFoundError(f"{folder}: no tokenizer files (need vocab.json + merges.txt, or "
                                    f"tokenizer.json; found {', '.join(sorted(files)) or 'nothing'})")
        return cls(CLIPTokenizer.from_pretrained(str(folder), local_files_only=True))

    def save_pretrained(self, folder):
        """Write the published layout: vocab.json, merges.txt, special_tokens_map.json,
        tokenizer_config.json (readable by ``CLIPTokenizer.from_pretrained`` and by ours)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tok = self.tokenizer
        model = json.loads(tok.backend_tokenizer.to_str())["model"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        write_text(folder / "vocab.json", json.dumps(model["vocab"], ensure_ascii=False))
        write_text(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
        special = {"bos_token": str(tok.bos_token), "eos_token": str(tok.eos_token),
                   "pad_token": str(tok.pad_token), "unk_token": str(tok.unk_token)}
        write_text(folder / "special_tokens_map.json", json.dumps(special, indent=2) + "\n")
        config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": self.max_length,
                  "do_lower_case": True, "errors": "replace", "add_prefix_space": False, **special}
        write_text(folder / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
        return folder

    # -- the reference call
    def __call__(self, prompts) -> TokenizedPrompts:
        prompts = [self.clean(p) for p in self._as_list(prompts)] if self.clean else self._as_list(prompts)
        full = self.tokenizer(prompts, padding=False, truncation=False, verbose=False)["input_ids"]
        dropped = [self._dropped_text(ids) for ids in full]
        for prompt, cut in zip(prompts, dropped):
            if cut:
                warnings.warn(f"prompt {prompt[:40]!r}... is longer than the text encoder's "
                              f"{self.max_length} tokens; dropped: {cut!r}", stacklevel=2)
        out = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt")
        ids = out["input_ids"] if self.pad_id is None else out["input_ids"].masked_fill(
            out["attention_mask"] == 0, self.pad_id)
        return TokenizedPrompts(ids, out["attention_mask"], dropped)

    def _as_list(self, prompts):
        if isinstance(prompts, str):
            return [prompts]
        if isinstance(prompts, (list, tuple)) and prompts and all(isinstance(p, str) for p in prompts):
            return list(prompts)
        if isinstance(prompts, (list, tuple)) and not prompts:
            raise ValueError("prompts: got an empty list; pass a string or a non-empty list of strings")
        got = type(prompts).__name__
        if isinstance(prompts, (list, tuple)):
            got += f" of {sorted({type(p).__name__ for p in prompts})}"
        raise TypeError(f"prompts: expected a string or a list of strings, got {got}")

    def _dropped_text(self, ids):
        """Untruncated ids [start, t1..tn, end] keep t1..t75: the rest is ids[76:-1]."""
        return self.tokenizer.decode(ids[self.max_length - 1:-1]) if len(ids) > self.max_length else ""

    # -- explanations
    @property
    def special_tokens(self) -> dict:
        tok = self.tokenizer
        roles = {role: (str(t), tok.convert_tokens_to_ids(str(t)))
                 for role, t in (("start", tok.bos_token), ("end", tok.eos_token), ("pad", tok.pad_token),
                                 ("unknown", tok.unk_token))}
        if self.pad_id is not None:
            roles["pad"] = (tok.convert_ids_to_tokens(self.pad_id), self.pad_id)
        return roles

    def tokenize(self, prompt: str) -> list[str]:
        """The BPE pieces of one prompt, without start/end tokens and without cutting."""
        prompt = self._as_list(prompt)[0]
        return self.tokenizer.tokenize(self.clean(prompt) if self.clean else prompt)

    def explain(self, prompt: str) -> Explanation:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt: expected a string, got {type(prompt).__name__}")
        text = self.clean(prompt) if self.clean else prompt
        full = self.tokenizer(text, padding=False, truncation=False, verbose=False)["input_ids"]
        kept = full if len(full) <= self.max_length else full[:self.max_length - 1] + full[-1:]
        tokens = self.tokenizer.convert_ids_to_tokens(kept)
        return Explanation(prompt, tokens, kept, [token_text(t) for t in tokens], self.max_length - len(kept),
                           self._dropped_text(full), self.special_tokens)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def __repr__(self):
        return (f"Tokenizer(vocab_size={self.vocab_size}, max_length={self.max_length}, "
                f"pad={self.special_tokens['pad'][0]!r}{', as OpenCLIP' if self.clean else ''})")
