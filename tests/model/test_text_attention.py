"""model.text (alphabet, encoding, errors that name characters) and model.attention (Graves' window, Eqs. 46-51)
against a direct loop over the equations, with gradcheck and the properties the writer relies on."""

from __future__ import annotations

import math

import pytest
import torch

from model.attention import GravesWindow, window
from model.text import DEFAULT_ALPHABET, UnsupportedCharactersError, decode, encode, normalise, one_hot_batch


def test_encode_round_trip_and_normalisation():
    t = encode("  Hello,\tworld!  ", DEFAULT_ALPHABET)
    assert decode(t, DEFAULT_ALPHABET) == "Hello, world!"
    assert normalise("a \u00a0 b\n") == "a b"


def test_unsupported_characters_are_all_named():
    with pytest.raises(UnsupportedCharactersError) as e:
        encode("naïve café — ok", DEFAULT_ALPHABET)
    assert e.value.characters == ["ï", "é", "—"]
    message = str(e.value)
    assert "'ï'" in message and "'é'" in message and "em dash" in message and "a-z" in message


@pytest.mark.parametrize(("text", "match"), [("   ", "empty"), ("x" * 201, "at most 200")])
def test_empty_and_long_texts(text, match):
    with pytest.raises(ValueError, match=match):
        encode(text, DEFAULT_ALPHABET)


def test_alphabet_covers_what_it_promises():
    for c in "jzXZ0123456789'":  # the demo corpus once lacked these: a model must be able to write them
        assert c in DEFAULT_ALPHABET


def reference_window(a_hat, b_hat, kappa, chars, char_mask):
    """Eqs. 46-47 with explicit loops (float64)."""
    B, K = kappa.shape
    U = chars.shape[1]
    phi = torch.zeros(B, U, dtype=torch.float64)
    phi_end = torch.zeros(B, dtype=torch.float64)
    for b in range(B):
        n = int(char_mask[b].sum())
        for u in range(1, n + 2):
            s = sum(math.exp(a_hat[b, k]) * math.exp(-math.exp(b_hat[b, k]) * (kappa[b, k] - u) ** 2) for k in range(K))
            if u <= n:
                phi[b, u - 1] = s
            else:
                phi_end[b] = s
    w = torch.einsum("bu,bua->ba", phi, chars.double())
    return w, phi, phi_end


def random_case(seed: int, B: int = 3, K: int = 4, A: int = 7, lengths=(5, 2, 9)):
    g = torch.Generator().manual_seed(seed)
    lines = [torch.randint(0, A, (n,), generator=g) for n in lengths]
    chars, mask = one_hot_batch(lines, A)
    a_hat = torch.randn(B, K, generator=g, dtype=torch.float64)
    b_hat = torch.randn(B, K, generator=g, dtype=torch.float64) - 1
    kappa = torch.rand(B, K, generator=g, dtype=torch.float64) * 10
    return a_hat, b_hat, kappa, chars.double(), mask


@pytest.mark.parametrize("seed", range(5))
def test_window_matches_the_equations(seed):
    a_hat, b_hat, kappa, chars, mask = random_case(seed)
    got = window(a_hat, b_hat, kappa, chars, mask)
    w, phi, phi_end = reference_window(a_hat, b_hat, kappa, chars, mask)
    torch.testing.assert_close(got.w, w)
    torch.testing.assert_close(got.phi, phi)
    torch.testing.assert_close(got.phi_end, phi_end)


def test_padding_changes_nothing():
    a_hat, b_hat, kappa, chars, mask = random_case(1)
    batch = window(a_hat, b_hat, kappa, chars, mask)
    n = int(mask[1].sum())
    alone = window(a_hat[1:2], b_hat[1:2], kappa[1:2], chars[1:2, :n], mask[1:2, :n])
    torch.testing.assert_close(batch.w[1:2], alone.w)
    torch.testing.assert_close(batch.phi_end[1:2], alone.phi_end)
    assert torch.all(batch.phi[1, n:] == 0)


def test_a_large_weight_far_away_is_small_not_nan():
    """alpha = exp(100) overflows float32; far from its centre the component still has a small finite weight."""
    chars, mask = one_hot_batch([torch.tensor([0, 1, 2])], 3)
    a_hat = torch.full((1, 1), 100.0)
    b_hat = torch.zeros(1, 1)  # beta = 1
    kappa = torch.full((1, 1), 14.0)  # (14 - u)^2 >= 110 for u <= 3.5
    got = window(a_hat, b_hat, kappa, chars, mask)
    naive = torch.exp(a_hat) * torch.exp(-((kappa - torch.tensor([1.0, 2.0, 3.0])) ** 2))
    assert torch.isnan(naive).any() or torch.isinf(naive).any()
    want = torch.exp(100.0 - (14.0 - torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)) ** 2).float()
    torch.testing.assert_close(got.phi[0], want)
    assert torch.isfinite(got.w).all() and torch.isfinite(got.phi_end).all()


def test_gradcheck():
    a_hat, b_hat, kappa, chars, mask = random_case(3, B=2, K=2, lengths=(3, 4))
    a_hat, b_hat, kappa = (t.clone().requires_grad_() for t in (a_hat, b_hat, kappa))
    assert torch.autograd.gradcheck(lambda a, b, k: window(a, b, k, chars, mask).w, (a_hat, b_hat, kappa))


def test_the_window_moves_forward_and_finishes():
    torch.manual_seed(0)
    layer = GravesWindow(in_dim=8, components=3, speed=0.5).double()
    chars, mask = one_hot_batch([encode("abc", DEFAULT_ALPHABET)], len(DEFAULT_ALPHABET))
    chars = chars.double()
    kappa = layer.initial_kappa(1, chars)
    h = torch.zeros(1, 8, dtype=torch.float64)
    finished, centres = [], []
    for _ in range(14):
        win = layer(h, kappa, chars, mask)
        assert torch.all(win.kappa > kappa)  # strictly forward (exp > 0)
        kappa = win.kappa
        centres.append(float(kappa.detach().mean()))
        finished.append(bool(win.finished.detach()))
    # At h = 0 every step advances exp(log 0.5) = 0.5 characters: past the 3rd character after ~8 steps.
    assert centres[0] == pytest.approx(0.5) and centres[7] == pytest.approx(4.0)
    assert not any(finished[:5]) and all(finished[9:]), finished


def test_bad_arguments():
    with pytest.raises(ValueError, match="components"):
        GravesWindow(4, 0)
    with pytest.raises(ValueError, match="speed"):
        GravesWindow(4, 2, speed=0)
    layer = GravesWindow(4, 2)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="speed"):
            layer.set_speed(bad)
    layer.set_speed(0.2)  # at h = 0 the centres now advance 0.2 characters a step
    win = layer(torch.zeros(1, 4), layer.initial_kappa(1, torch.zeros(1)), *one_hot_batch([[0]], 3))
    assert win.kappa[0].tolist() == pytest.approx([0.2, 0.2])


def test_check_lines_names_every_missing_character_at_once_and_numbers_a_bad_line():
    from model.text import LineError, UnsupportedCharactersError, check_lines

    check_lines(["abc", "cab"], "abc")
    with pytest.raises(UnsupportedCharactersError) as e:
        check_lines(["abx", "yb", "xa"], "abc")
    assert e.value.characters == ["x", "y"]
    with pytest.raises(LineError) as bad:
        check_lines(["ab", "  ", "x"], "abc")  # the empty line comes first: its number, encode's message
    assert (bad.value.line, bad.value.lines) == (2, 3) and "empty" in str(bad.value)
