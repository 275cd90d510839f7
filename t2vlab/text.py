"""The text side: prompt -> token ids -> the context the UNet attends to.

    "a photo of a cat" --Tokenizer--> [49406, 320, 1125, 539, 320, 2368, 49407, 0, 0, ...]  (B, 77)
                       --CLIPTextEncoder--> last hidden state                             (B, 77, 1024)

The tokenizer is CLIP's byte-pair encoding (BPE): text is lower-cased, split into words, each
word's UTF-8 bytes are merged pairwise by a ranked list of merges learnt from data; ``</w>`` marks
the end of a word. Every prompt is framed by ``<|startoftext|>`` and ``<|endoftext|>`` and cut or
padded to 77 positions, the text encoder's length. We wrap transformers' ``CLIPTokenizer`` for the
splitting and merging; the real 49,408-token vocabulary is built here from OpenAI's merges file,
shipped in ``t2vlab/data/`` (MIT licence, see ``CLIP-LICENSE.txt``).

The text encoder is the text half of OpenCLIP ViT-H/14: token + position embeddings, 23 pre-norm
transformer blocks (causal self-attention: token i sees tokens 0..i only; then an MLP), a final
LayerNorm. Parameter names are those of the published ``text_encoder/`` files.
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
import torch.nn.functional as F
from torch import nn

from .attention import BACKENDS, attention
from .checkpoint import TRANSFORMERS_WEIGHTS, CheckpointError, ModelBase, check_positive_ints, check_small_positive

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
        (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        special = {"bos_token": str(tok.bos_token), "eos_token": str(tok.eos_token),
                   "pad_token": str(tok.pad_token), "unk_token": str(tok.unk_token)}
        (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
        config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": self.max_length,
                  "do_lower_case": True, "errors": "replace", "add_prefix_space": False, **special}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
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


# ------------------------------------------------------------------------------------ text encoder
ACTIVATIONS = {
    "gelu": F.gelu,                                        # exact: x * Phi(x)
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # OpenAI CLIP's sigmoid approximation
}


@dataclasses.dataclass
class CLIPTextConfig:
    """Field names as in transformers' ``text_encoder/config.json``; defaults: ms-1.7b's encoder."""

    vocab_size: int = 49408
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 23
    num_attention_heads: int = 16
    max_position_embeddings: int = 77
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    bos_token_id: int = 0        # kept only so save_pretrained writes back what it read
    eos_token_id: int = 2
    pad_token_id: int = 1
    use_attention_mask: bool = False  # diffusers' pipelines pass the padding mask only when this is set

    def validate(self):
        check_positive_ints(self, "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "max_position_embeddings")
        check_positive_ints(self, "num_hidden_layers", limit=256)
        check_positive_ints(self, "vocab_size", limit=1 << 20)
        if self.hidden_size % self.num_attention_heads:
            raise CheckpointError(f"config hidden_size={self.hidden_size} is not divisible by "
                                  f"num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise CheckpointError(f"config hidden_act={self.hidden_act!r}: "
                                  f"expected one of {sorted(ACTIVATIONS)}")
        check_small_positive(self, "layer_norm_eps")


class TextEmbeddings(nn.Module):
    """Token embedding + learnt position embedding: ids (B, T) -> (B, T, C)."""

    def __init__(self, config):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids):
        return self.token_embedding(input_ids) + self.position_embedding.weight[:input_ids.shape[1]]


class CLIPAttention(nn.Module):
    """Multi-head self-attention with CLIP's names (q_proj, k_proj, v_proj, out_proj, with bias)."""

    def __init__(self, config):
        super().__init__()
        c = config.hidden_size
        self.heads = config.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.out_proj = nn.Linear(c, c)
        self.backend, self.slice_size = "sdpa", None

    def forward(self, x, mask=None):
        q, k, v = self.split_heads(self.q_proj(x)), self.split_heads(self.k_proj(x)), \
            self.split_heads(self.v_proj(x))
        out = attention(q, k, v, backend=self.backend, slice_size=self.slice_size, causal=True, mask=mask)
        return self.out_proj(out.transpose(1, 2).flatten(2))

    def split_heads(self, t):  # (B, T, C) -> (B, H, T, C/H)
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)


class CLIPMLP(nn.Module):
    """fc1 (C -> 4C), GELU or quick-GELU, fc2 (4C -> C)."""

    def __init__(self, config):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CLIPLayer(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = CLIPAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)

    def forward(self, x, mask=None):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPLayers(nn.Module):
    """The stack of blocks (``encoder.layers.N`` in the files); runs the first ``n`` of them."""

    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList(CLIPLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x, mask=None, n=None):
        for layer in self.layers[:n]:
            x = layer(x, mask)
        return x


class TextTransformer(nn.Module):
    """Embeddings -> blocks -> final LayerNorm (``text_model.*`` in the files)."""

    def __init__(self, config):
        super().__init__()
        self.embeddings = TextEmbeddings(config)
        self.encoder = CLIPLayers(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, mask=None, n_layers=None):
        return self.final_layer_norm(self.encoder(self.embeddings(input_ids), mask, n_layers))


class CLIPTextEncoder(ModelBase):
    """CLIP's text transformer: ids (B, T) -> last hidden state after the final norm (B, T, C).

    ``clip_skip=k`` stops k blocks early and applies the final norm to that output, as the
    reference pipeline does (``hidden_states[-(k + 1)]`` then ``final_layer_norm``).
    ``attention_mask`` (B, T; 1 keep, 0 padding) hides padding keys, on top of the causal mask.
    """

    config_class = CLIPTextConfig
    weight_stems = TRANSFORMERS_WEIGHTS
    ignore_unexpected = ("embeddings.position_ids",)  # an index buffer older files carry
    prefix = "text_model."

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.text_model = TextTransformer(config)

    def forward(self, input_ids, attention_mask=None, clip_skip=None):
        if input_ids.ndim != 2 or input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"input_ids: expected shape (batch, tokens <= "
                             f"{self.config.max_position_embeddings}), got {tuple(input_ids.shape)}")
        n_layers = self.config.num_hidden_layers
        if clip_skip is not None and not (isinstance(clip_skip, int) and 0 <= clip_skip <= n_layers):
            raise ValueError(f"clip_skip: expected an int from 0 to {n_layers}, got {clip_skip!r}")
        mask = None
        if attention_mask is not None:  # (B, T) -> additive (B, 1, 1, T): padding keys get a huge negative
            dtype = self.text_model.final_layer_norm.weight.dtype
            keep = attention_mask.to(device=input_ids.device, dtype=torch.bool)[:, None, None, :]
            mask = torch.zeros(keep.shape, dtype=dtype, device=input_ids.device).masked_fill(
                ~keep, torch.finfo(dtype).min)
        return self.text_model(input_ids, mask, n_layers - (clip_skip or 0))

    def set_attention_backend(self, backend="sdpa", slice_size=None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
        for m in self.modules():
            if isinstance(m, CLIPAttention):
                m.backend, m.slice_size = backend, slice_size

    @classmethod
    def convert_state_dict(cls, state):
        """transformers 5 writes the tensors without the ``text_model.`` prefix published files carry."""
        if state and not any(k.startswith(cls.prefix) for k in state):
            return {cls.prefix + k: v for k, v in state.items()}
        return state

    def save_pretrained(self, folder, variant=None, safe_serialization=True, state_dict=None):
        """Weights as ``model[.variant].safetensors`` (or ``pytorch_model.bin``) with the published
        names, and a config.json that transformers' ``CLIPTextModel.from_pretrained`` reads."""
        target = super().save_pretrained(folder, variant, safe_serialization, state_dict)
        config = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
                  **dataclasses.asdict(self.config)}
        (Path(folder) / self.config_filename()).write_text(json.dumps(config, indent=2) + "\n")
        return target
