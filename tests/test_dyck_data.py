"""The shared Dyck module `flowsim._dyck`: vocabulary, the two samplers of one distribution, structure, LM rows."""

import numpy as np
import pytest

from flowsim import (
    DyckLanguage,
    acceptance_rate,
    closing_accuracy,
    depths,
    lm_batch,
    matching_open,
    sample_dyck,
    structure,
)

L24 = DyckLanguage(2, 4)


def test_vocabulary():
    lang = DyckLanguage(3, 5)
    assert lang.vocab_size == 9
    np.testing.assert_array_equal(lang.opens, [3, 4, 5])
    np.testing.assert_array_equal(lang.closes, [6, 7, 8])
    assert lang.is_open(3) and not lang.is_open(6) and not lang.is_open(0)
    assert lang.is_close(8) and not lang.is_close(2) and not lang.is_close(9)
    assert lang.close_of(4) == 7
    np.testing.assert_array_equal(lang.close_of(np.array([3, 5])), [6, 8])
    with pytest.raises(ValueError, match="not an open bracket"):
        lang.close_of(6)


@pytest.mark.parametrize(
    "name, kw", [("k", dict(k=0, max_depth=2)), ("max_depth", dict(k=2, max_depth=0)), ("k", dict(k=True, max_depth=2))]
)
def test_language_refuses_bad_values(name, kw):
    with pytest.raises(ValueError, match=f"invalid {name}="):
        DyckLanguage(**kw)


def _pdfa_prob(s, lang):
    """Probability of the automaton emitting s then END (direct transcription of the rule)."""
    p, d, k, D = 1.0, 0, lang.k, lang.max_depth
    for tok in s:
        if lang.is_open(tok):
            p *= 1 / (2 * k)
            d += 1
        else:
            p *= 1.0 if d == D else 0.5
            d -= 1
    return p * 0.5


def test_samples_are_valid_and_in_range():
    rng = np.random.default_rng(0)
    for method in ("exact", "reject"):
        for s in sample_dyck(rng, L24, 300, 4, 20, method=method):
            assert 4 <= s.size <= 20
            d = depths(s, L24)
            assert d.min() >= 0 and d.max() <= 4 and d[-1] == 0
            matching_open(s, L24)  # raises on a type mismatch


def test_exact_and_reject_give_the_automaton_distribution():
    """Both samplers against the automaton's exact conditional law of the length (chi-square)."""
    rng = np.random.default_rng(1)
    lang = DyckLanguage(1, 2)
    # Length distribution of Dyck-(1, 2) under the PDFA, conditioned on [2, 8], by enumeration of paths.
    lengths = np.arange(2, 9, 2)
    probs = np.array([_len_prob(n, lang) for n in lengths])
    probs = probs / probs.sum()
    for method in ("exact", "reject"):
        got = np.array([s.size for s in sample_dyck(rng, lang, 20000, 2, 8, method=method)])
        counts = np.array([(got == n).sum() for n in lengths])
        chi2 = np.sum((counts - 20000 * probs) ** 2 / (20000 * probs))
        assert chi2 < 16.3, (method, counts, probs)  # 3 d.o.f., p = 0.001


def _len_prob(n, lang):
    import itertools

    total = 0.0
    for bits in itertools.product((0, 1), repeat=n):  # 1 = open (k = 1: one bracket type)
        s = [3 if b else 4 for b in bits]
        d = np.cumsum([1 if b else -1 for b in bits])
        if d.min() < 0 or d.max() > lang.max_depth or d[-1] != 0:
            continue
        total += _pdfa_prob(s, lang)
    return total


def test_long_strings_and_refusal():
    rng = np.random.default_rng(2)
    acc = acceptance_rate(L24, 400, 500)
    assert 0 < acc < 1e-8  # the paper's test lengths: out of reach of rejection
    long = sample_dyck(rng, L24, 20, 400, 500)
    assert all(400 <= s.size <= 500 and depths(s, L24).max() <= 4 for s in long)
    with pytest.raises(ValueError, match="acceptance rate"):
        sample_dyck(rng, L24, 20, 400, 500, method="reject")
    with pytest.raises(ValueError, match="no Dyck string"):
        sample_dyck(rng, L24, 5, 3, 3)
    with pytest.raises(ValueError, match="invalid max_len"):
        sample_dyck(rng, L24, 5, 10, 4)


def test_depths_matching_structure():
    a, b, A, B = 3, 4, 5, 6  # (a (b a) b)
    s = np.array([a, A, b, a, A, B, a, b, B, A])
    np.testing.assert_array_equal(depths(s), [1, 0, 1, 2, 1, 0, 1, 2, 1, 0])
    np.testing.assert_array_equal(depths(s, L24), depths(s))
    np.testing.assert_array_equal(matching_open(s), [-1, 0, -1, -1, 3, 2, -1, -1, 7, 6])
    assert structure(s) == ((1, 0), (1, 2, 1, 0), (1, 2, 1, 0))
    t = np.array([b, B, a, b, B, A, b, a, A, B])  # same structure, other types
    assert structure(t) == structure(s)
    with pytest.raises(ValueError, match="does not match"):
        matching_open(np.array([a, B]), L24)
    np.testing.assert_array_equal(depths(np.array([a, b]), L24), [1, 2])  # a prefix needs lang
    with pytest.raises(ValueError, match="not balanced"):
        depths(np.array([b, a]))  # read as close-then-open without lang


def test_lm_batch():
    a, b, A, B = 3, 4, 5, 6
    tokens, targets, close = lm_batch([np.array([a, A]), np.array([b, a, A, B])], L24, 6)
    np.testing.assert_array_equal(tokens, [[1, a, A, 0, 0, 0], [1, b, a, A, B, 0]])
    np.testing.assert_array_equal(targets, [[a, A, 2, 0, 0, 0], [b, a, A, B, 2, 0]])
    np.testing.assert_array_equal(close, targets >= 5)
    with pytest.raises(ValueError, match="row_len"):
        lm_batch([np.array([a, A])], L24, 2)


def test_closing_accuracy_rules():
    targets = np.array([[5, 6, 2]])
    mask = np.array([[True, True, False]])
    logits = np.zeros((1, 3, 7))
    logits[0, 0, 5] = 2.0  # p(5)/(p5+p6) = 0.88 > 0.8: right under both rules
    logits[0, 1, 6] = 0.5  # 0.62: right by argmax, wrong by ratio
    logits[0, 1, 0] = 9.0  # non-close tokens do not count
    assert closing_accuracy(logits, targets, mask, L24, "ratio") == 0.5
    assert closing_accuracy(logits, targets, mask, L24, "argmax") == 1.0
    assert np.isnan(closing_accuracy(logits, targets, np.zeros_like(mask), L24))
    with pytest.raises(ValueError, match="not a close"):
        closing_accuracy(logits, targets, np.ones_like(mask), L24)
