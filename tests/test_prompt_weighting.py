"""Weighted and long prompts (t2vlab.techniques.prompt_weighting): the two parsers construct by construct,
unbalanced brackets said where, A1111's rule against its formula computed here by hand, long prompts in
chunks of 75, and today's numbers, bit for bit, for plain prompts and for weights of 1.

compel's syntax and rule are checked against compel itself in tests/parity/test_prompt_weighting_parity.py.
"""

import math

import pytest
import torch

from t2vlab.techniques import prompt_weighting as pw
from t2vlab.techniques.prompt_weighting import BREAK, parse_a1111, parse_compel
from t2vlab.text_encoder import CLIPTextEncoder
from tests.helpers import TEXT_TINY, randomize_, rel_err

pytestmark = pytest.mark.usefixtures("one_thread")

START, END, PAD = 49406, 49407, 0


@pytest.fixture(scope="module")
def encoder():
    """A tiny CLIP text encoder with the real 49,408-token vocabulary and random weights."""
    return randomize_(CLIPTextEncoder.from_config(dict(TEXT_TINY, vocab_size=49408)), seed=3).eval()


def today(tok, encoder, prompts, clip_skip=None):
    """What the pipeline's encode_prompt computes today."""
    with torch.no_grad():
        return encoder(tok(prompts).input_ids, clip_skip=clip_skip)


# --------------------------------------------------------------------------------------- A1111's syntax
@pytest.mark.parametrize("prompt, expected", [
    ("a cat", [("a cat", 1.0)]),
    ("a (cat)", [("a ", 1.0), ("cat", 1.1)]),
    ("a ((cat))", [("a ", 1.0), ("cat", 1.1 * 1.1)]),
    ("a [cat]", [("a ", 1.0), ("cat", 1 / 1.1)]),
    ("a [[cat]]", [("a ", 1.0), ("cat", (1 / 1.1) * (1 / 1.1))]),
    ("a (cat:1.4) on", [("a ", 1.0), ("cat", 1.4), (" on", 1.0)]),
    ("(cat: 0.5 )", [("cat", 0.5)]),
    ("((cat:1.3))", [("cat", 1.3 * 1.1)]),
    ("(a [b] c:2)", [("a ", 2.0), ("b", 1 / 1.1 * 2), (" c", 2.0)]),
    ("(a:b)", [("a:b", 1.1)]),                      # a ":" that starts no weight is text
    ("(a)(b)", [("ab", 1.1)]),                      # neighbours of equal weight merge
    ("a (b:1) c", [("a b c", 1.0)]),
    (r"\(cat\)", [("(cat)", 1.0)]),                 # the escapes
    (r"\[cat\]", [("[cat]", 1.0)]),
    (r"a \\ b", [("a \\ b", 1.0)]),
    (r"(\(cat\))", [("(cat)", 1.1)]),
    (r"a\b", [("ab", 1.0)]),                        # a backslash before anything else vanishes (A1111)
    ("", [("", 1.0)]),
    ("a BREAK b", [("a", 1.0), BREAK, ("b", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), BREAK, ("b", 1.1)]),  # a break inside brackets too (A1111: the word BREAK)
    ("aBREAK b", [("aBREAK b", 1.0)]),              # BREAK only as a word of its own
    ("a break b", [("a break b", 1.0)]),
])
def test_a1111_syntax(prompt, expected):
    assert parse_a1111(prompt) == expected


def test_a1111_reads_its_own_examples_as_a1111_does():
    """sd-webui's documented examples (its parse_prompt_attention docstring), unbalanced ones with strict=False."""
    assert parse_a1111("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", strict=False) == [
        ("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
        (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]
    assert parse_a1111("(unbalanced", strict=False) == [("unbalanced", 1.1)]
    assert parse_a1111(r"\(literal\]") == [("(literal]", 1.0)]
    assert parse_a1111("a cat) dog]", strict=False) == [("a cat) dog]", 1.0)]
    assert parse_a1111("a :1.2) b", strict=False) == [("a :1.2) b", 1.0)]
    assert parse_a1111("(a [b) c]") == [("a ", 1.1), ("b", 1.0), (" c", 1 / 1.1)]  # two stacks, as A1111


@pytest.mark.parametrize("parse", [parse_a1111, parse_compel])
@pytest.mark.parametrize("prompt, at, what", [
    ("a (red cat on a mat", 2, "'(' is never closed"),
    ("a red cat) on a mat", 9, "')' closes no '('"),
])
def test_unbalanced_brackets_say_where(parse, prompt, at, what):
    with pytest.raises(ValueError) as e:
        parse(prompt)
    message = str(e.value)
    assert f"{what} at character {at}" in message
    assert f"    {prompt}\n    {' ' * at}^" in message  # the caret under the bracket
    assert "strict=False" in message


def test_a1111_unbalanced_square_bracket_and_bad_weight():
    with pytest.raises(ValueError, match=r"'\[' is never closed at character 2"):
        parse_a1111("a [cat")
    with pytest.raises(ValueError, match=r"'\]' closes no '\[' at character 5"):
        parse_a1111("a cat] b")
    with pytest.raises(ValueError, match=r"'\)' closes no '\(' at character 6"):
        parse_a1111("a :1.2) b")
    with pytest.raises(ValueError, match=r"the weight '1\.2\.3' is not a number at character 3"):
        parse_a1111("(a:1.2.3)")
    with pytest.raises(ValueError, match="strict must be True or False"):
        parse_a1111("a", strict=1)


# -------------------------------------------------------------------------------------- compel's syntax
@pytest.mark.parametrize("prompt, expected", [
    ("a cat", [("a cat", 1.0)]),
    ("a cat+ dog", [("a", 1.0), ("cat", 1.1), ("dog", 1.0)]),
    ("a cat++ dog", [("a", 1.0), ("cat", 1.1 ** 2), ("dog", 1.0)]),
    ("a cat-", [("a", 1.0), ("cat", 0.9)]),
    ("a cat---", [("a", 1.0), ("cat", 0.9 ** 3)]),
    ("a (red cat)1.3 on", [("a", 1.0), ("red cat", 1.3), ("on", 1.0)]),
    ("(red cat)++", [("red cat", 1.1 ** 2)]),
    ("(red cat)-", [("red cat", 0.9)]),
    ("(cat).5", [("cat", 0.5)]),
    ("(cat)2", [("cat", 2.0)]),
    ("(a (cat)++ dog)0.8", [("a", 0.8), ("cat", 0.8 * 1.1 ** 2), ("dog", 0.8)]),  # nesting multiplies
    ('"a cat"1.2 dog', [("a cat", 1.2), ("dog", 1.0)]),
    ('"a (cat)0.5"', [("a", 1.0), ("cat", 0.5)]),
    ("(a cat)", [("a cat", 1.0)]),
    ("x-ray a+b+", [("x-ray", 1.0), ("a+b", 1.1)]),     # a + or - inside a word is text
    ("cat++dog", [("cat", 1.1 ** 2), ("dog", 1.0)]),
    ("a,b", [("a, b", 1.0)]),                            # compel's first step: a space after a comma
    ("(one, two.)1.3", [("one , two .", 1.3)]),          # inside a group "," and "." stand alone
    (r"a \(cat\) dog", [("a (cat) dog", 1.0)]),
    ("", [("", 1.0)]),
])
def test_compel_syntax(prompt, expected):
    assert parse_compel(prompt) == expected


def test_compel_blend_and_conjunction():
    assert parse_compel('("a cat", "a dog").blend(0.7, 0.3)') == pw.Blend([[("a cat", 1.0)], [("a dog", 1.0)]],
                                                                           [0.7, 0.3], True)
    assert parse_compel('("a cat++", dog).blend(1, 2, no_normalize)') == pw.Blend(
        [[("a", 1.0), ("cat", 1.1 ** 2)], [("dog", 1.0)]], [1.0, 2.0], False)
    assert parse_compel("(cat, dog).blend()") == pw.Blend([[("cat", 1.0)], [("dog", 1.0)]], [1.0, 1.0], True)
    assert parse_compel('("a cat", "a dog").and(1, 0.5)') == pw.Conjunction([[("a cat", 1.0)], [("a dog", 1.0)]],
                                                                             [1.0, 0.5])
    with pytest.raises(ValueError, match="got 1 weights for 2 prompts"):
        parse_compel('("a cat", "a dog").blend(1)')
    with pytest.raises(ValueError, match=r"\.swap\(.*not supported"):
        parse_compel("a cat.swap(dog)")
    assert parse_compel('say "hi', strict=False) == [('say "hi', 1.0)]
    assert parse_compel("(a cat", strict=False) == [("(a cat", 1.0)]


# ---------------------------------------------------------------------------------------- chunks
def test_chunks_of_75_with_breaks():
    def sizes(fragment_tokens):
        return [len(c) for c in pw.split_into_chunks(fragment_tokens, 75)]

    assert sizes([[]]) == [0]                          # an empty prompt: one empty chunk
    assert sizes([list(range(75))]) == [75]
    assert sizes([list(range(76))]) == [75, 1]
    assert sizes([list(range(150))]) == [75, 75]
    assert sizes([list(range(40)), list(range(40))]) == [75, 5]  # fragments share chunks
    assert sizes([[1, 2], BREAK, [3]]) == [2, 1]
    assert sizes([BREAK, [3]]) == [0, 1]               # A1111: a break closes even an empty chunk
    assert sizes([[1], BREAK, []]) == [1]              # ... and the last one counts only when it holds tokens
    assert sizes([list(range(75)), BREAK, [1]]) == [75, 1]


def test_a_chunk_is_framed_as_the_tokenizer_frames_a_short_prompt(tok):
    for prompt in ["a photo of a cat", "", "wow!!! café 猫 🐱 naïve", "An ASTRONAUT, riding a horse, 4k!!"]:
        chunks = pw.chunk_prompt([(prompt, 1.0)], tok)
        assert torch.equal(chunks.ids, tok(prompt).input_ids)
    assert pw.frame([], tok) == [START, END] + [PAD] * 75


def test_a_200_token_prompt_is_three_chunks_each_encoded_on_its_own(tok, encoder):
    prompt = " ".join(["cat", "dog", "sun", "tree"] * 50)
    ids = pw.token_ids(tok, prompt)
    assert len(ids) == 200
    for syntax in pw.SYNTAXES:
        embeds, _ = pw.encode_prompts(tok, encoder, prompt, prompt_syntax=syntax)
        assert embeds.shape == (1, 77 * math.ceil(200 / 75), 32)
        for k in range(3):  # chunk k: [start, tokens 75k..75k+74, end, pad...] through the encoder alone
            alone = encoder(torch.tensor([pw.frame(ids[75 * k:75 * (k + 1)], tok)]))
            assert rel_err(embeds[:, 77 * k:77 * (k + 1)], alone) < 1e-6, (syntax, k)


def test_a_short_prompt_gives_todays_embeddings_bit_for_bit(tok, encoder):
    prompts = ["a photo of a cat", "An ASTRONAUT riding a horse, 4k!!", "", " ".join(["cat"] * 75)]
    expected = today(tok, encoder, prompts)
    for syntax in pw.SYNTAXES:  # no brackets: every weight is 1
        got, _ = pw.encode_prompts(tok, encoder, prompts, prompt_syntax=syntax)
        assert torch.equal(got, expected), syntax
    for prompt in prompts:
        assert torch.equal(pw.encode_prompts(tok, encoder, prompt)[0], today(tok, encoder, prompt))
    assert torch.equal(pw.encode_prompts(tok, encoder, prompts[0], clip_skip=1)[0],
                       today(tok, encoder, prompts[0], clip_skip=1))


def test_weights_of_one_written_out_give_todays_embeddings(tok, encoder):
    expected = today(tok, encoder, "a red cat on a mat")
    assert torch.equal(pw.encode_prompts(tok, encoder, "a (red:1) cat on a mat", prompt_syntax="a1111")[0], expected)
    assert torch.equal(pw.encode_prompts(tok, encoder, "a (red cat)1 on a mat", prompt_syntax="compel")[0], expected)


# ------------------------------------------------------------------------------------------ the rules
def test_a1111_rule_equals_its_formula_by_hand(tok, encoder):
    """z = encoder(chunk); z_w = z * w per token; z_w * mean(z) / mean(z_w), per chunk, chunks side by side."""
    prompt = "a (red:1.5) cat [sitting] BREAK on a ((mat))"
    got, _ = pw.encode_prompts(tok, encoder, prompt, prompt_syntax="a1111")

    def ids(text):
        return tok.tokenizer.convert_tokens_to_ids(tok.tokenize(text))

    first = [(ids("a"), 1.0), (ids("red"), 1.5), (ids("cat"), 1.0), (ids("sitting"), 1 / 1.1)]
    second = [(ids("on a"), 1.0), (ids("mat"), 1.1 * 1.1)]
    expected = []
    for chunk in (first, second):
        tokens = [START] + [t for group, _ in chunk for t in group] + [END]
        weights = [1.0] + [w for group, w in chunk for _ in group] + [1.0]
        tokens, weights = tokens + [PAD] * (77 - len(tokens)), weights + [1.0] * (77 - len(weights))
        with torch.no_grad():
            z = encoder(torch.tensor([tokens]))[0]                       # (77, D)
        z_w = z * torch.tensor(weights)[:, None]
        expected.append(z_w * (z.mean() / z_w.mean()))
    expected = torch.cat(expected)[None]
    assert got.shape == (1, 154, 32)
    assert rel_err(got, expected) < 1e-6  # the same float32 operations; 1e-6 leaves room for their order
    plain = torch.cat([today(tok, encoder, "a red cat sitting"), today(tok, encoder, "on a mat")], dim=1)
    assert rel_err(got, plain) > 1e-2     # and the weights matter
    assert torch.allclose(got[0, :77].mean(), plain[0, :77].mean(), atol=1e-6)  # each chunk keeps its mean


def test_a1111_rule_passes_an_unweighted_chunk_through_even_with_a_zero_mean():
    """A chunk whose weights are all 1 is z itself, also where mean(z) is 0 and the formula's ratio would be 0 / 0
    (an empty padding chunk of an encoder whose last LayerNorm has no bias: the tiny checkpoint's)."""
    z = torch.randn(2, 77, 8)
    z[1] = torch.randint(-5, 6, (77, 8), generator=torch.Generator().manual_seed(0)).float()
    z[1, 0, 0] -= z[1].sum()  # small integers, so that the mean is exactly 0 in float32
    w = torch.ones(2, 77)
    w[0, 5] = 1.4
    out = pw.a1111_emphasis(z, w)
    assert torch.equal(out[1], z[1]) and torch.isfinite(out).all()
    assert not torch.equal(out[0], z[0])


def test_a1111_rule_leaves_a_weighted_chunk_with_no_mean_unrestored():
    """A weighted chunk whose mean is 0 (every token's mean 0, as a LayerNorm with zero bias and unit scale gives:
    the tiny checkpoint's encoder) has no mean to restore: z * w, finite, where the ratio 0 / 0 gave inf or NaN
    (a studio test's video turned NaN on it); a chunk with a mean is still restored."""
    z = torch.randn(2, 77, 8)
    z[0] = torch.randint(-5, 6, (77, 8), generator=torch.Generator().manual_seed(1)).float()
    z[0, :, 0] -= z[0].sum(-1)  # small integers, each token's sum 0: the means are exactly 0 (0 / 0 without the rule)
    z[1] += 0.5
    w = torch.ones(2, 77)
    w[:, 5] = 1.5
    out = pw.a1111_emphasis(z, w)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], z[0] * w[0, :, None])
    assert torch.allclose(out[1].mean(), z[1].mean(), rtol=1e-5) and not torch.equal(out[1], z[1] * w[1, :, None])


def test_compel_rule_pieces():
    z, e = torch.randn(2, 77, 8), torch.randn(77, 8)
    w = torch.ones(2, 77)
    w[0, 3] = 1.3
    out = pw.compel_weighting(z, w, e)
    assert torch.equal(out[1], z[1]) and torch.equal(out[0, :3], z[0, :3])  # weight 1: z itself
    assert torch.allclose(out[0, 3], e[3] + (z[0, 3] - e[3]) * 1.3)
    assert pw.downweight_lerp(1.0) == 0.0
    assert pw.downweight_lerp(0.5) == pytest.approx(1.0)      # half-way to the prompt without the fragment
    assert pw.downweight_lerp(0.0) == pytest.approx(math.tan((1 - 1e-5) * math.pi / 2))
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.allclose(pw.compel_downweight_blend([a, b], [1.0, 3.0]), 0.25 * a + 0.75 * b)


# ------------------------------------------------------------------------- negative prompts and options
def test_negative_prompt_is_padded_with_the_empty_prompt(tok, encoder):
    prompt = " ".join(["cat"] * 100)
    for syntax in pw.SYNTAXES:
        embeds, negative = pw.encode_prompts(tok, encoder, prompt, "blurry", prompt_syntax=syntax)
        assert embeds.shape == negative.shape == (1, 154, 32)
        assert rel_err(negative[:, :77], today(tok, encoder, "blurry")) < 1e-6
        assert rel_err(negative[:, 77:], today(tok, encoder, "")) < 1e-6
    short, long = pw.encode_prompts(tok, encoder, ["a cat", "a dog"], [prompt, prompt])
    assert short.shape == long.shape == (2, 154, 32)
    assert torch.equal(short[:, 77:], today(tok, encoder, "").expand(2, -1, -1))
    assert pw.encode_prompts(tok, encoder, "a cat")[1] is None
    with pytest.raises(ValueError, match="cannot be padded"):
        pw.pad_chunks([torch.zeros(1, 77, 4), torch.zeros(1, 100, 4)], torch.zeros(1, 77, 4))


def test_truncate_keeps_one_chunk_and_says_what_was_cut(tok, encoder):
    prompt = " ".join(["cat"] * 75) + " on a red mat"
    with pytest.warns(UserWarning, match="dropped: 'on a red mat'"):
        plain, _ = pw.encode_prompts(tok, encoder, prompt, truncate=True)
    assert torch.equal(plain, today(tok, encoder, " ".join(["cat"] * 75)))  # today's cut at 77
    with pytest.warns(UserWarning, match="dropped: 'on a red mat'"):
        weighted, _ = pw.encode_prompts(tok, encoder, prompt, prompt_syntax="a1111", truncate=True)
    assert weighted.shape == (1, 77, 32)


def test_arguments_are_checked(tok, encoder):
    with pytest.raises(ValueError, match=r"prompt_syntax must be one of \('plain', 'a1111', 'compel'\)"):
        pw.encode_prompts(tok, encoder, "a cat", prompt_syntax="sdxl")
    with pytest.raises(ValueError, match="negative_prompt: got 1 prompts for 2"):
        pw.encode_prompts(tok, encoder, ["a", "b"], ["c"])
    with pytest.raises(TypeError, match="prompt: expected a string"):
        pw.encode_prompts(tok, encoder, 3)
    with pytest.raises(ValueError, match="truncate must be True or False"):
        pw.encode_prompts(tok, encoder, "a", truncate="yes")
