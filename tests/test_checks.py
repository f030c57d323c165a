"""ppml._checks: one exception type per kind of error, the same from every attack and metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ppml._checks import (DTypeError, RangeError, ShapeError, check_batch, check_choice, check_finite, check_images,
                          check_int, check_positive_int, check_probability, check_range, check_same_length)
from ppml.attacks import fr_attack, gan_attack, itn_attack, le_statistics_attack
from ppml.attacks import jigsaw as J
from ppml.attacks.instahide import carlini_attack, instahide_attack
from ppml.ciphers import cipher_for
from ppml.compression import encoded_size
from ppml.keys import EtCKey
from ppml.metrics import psnr, ssim


def _good(n: int = 4) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ the vocabulary, one kind at a time
def test_value_kinds_are_value_errors_and_distinct():
    for cls in (ShapeError, DTypeError, RangeError):
        assert issubclass(cls, ValueError)
    assert len({ShapeError, DTypeError, RangeError}) == 3
    assert not issubclass(ShapeError, (DTypeError, RangeError)) and not issubclass(DTypeError, RangeError)


def test_check_images_each_kind():
    x = _good()
    assert check_images(x, "x") is x  # valid input passes through untouched
    with pytest.raises(TypeError, match=r"who: x must be a torch.Tensor \(N, C, H, W\), got list"):
        check_images([1, 2], "x", "who")
    with pytest.raises(ShapeError, match=r"x must be a batch tensor of shape \(N, C, H, W\), got shape \(3, 16, 16\)"):
        check_images(x[0], "x")
    with pytest.raises(ShapeError, match="at least one image, got an empty batch"):
        check_images(x[:0], "x")
    assert check_images(x[:0], "x", allow_empty=True).shape[0] == 0
    with pytest.raises(DTypeError, match=r"must be uint8 images.*got torch.float32.*\* 255"):
        check_images(x.float() / 255, "x", dtype="uint8")
    with pytest.raises(DTypeError, match="must be floating-point images, got torch.uint8"):
        check_images(x, "x", dtype="float")
    with pytest.raises(DTypeError, match="uint8 .* or float.*got torch.int64"):
        check_images(x.long(), "x")
    with pytest.raises(ShapeError, match=r"must have 1 or 3 channel\(s\), got 2"):
        check_images(x[:, :2], "x", channels=(1, 3))
    with pytest.raises(ShapeError, match="at least 32×32 pixels, got \\(16, 16\\)"):
        check_images(x, "x", min_size=32)
    with pytest.raises(RangeError, match=r"must lie in \[0, 1\], got values in \[0, 255\]"):
        check_images(x.float(), "x")
    assert check_images(x.float(), "x", value_range=None) is not None  # range left to the caller
    nan = x.float() / 255
    nan[0, 0, 0, 0] = math.nan
    with pytest.raises(RangeError, match=r"must be finite, got 1 non-finite value\(s\)"):
        check_images(nan, "x")
    with pytest.raises(ValueError, match="dtype must be one of"):
        check_images(x, "x", dtype="int")


def test_check_batch_allows_empty_and_any_size_but_not_3d():
    check_batch(torch.zeros(0, 1, 0, 0), "K")
    with pytest.raises(ShapeError, match="K: x must be a batch tensor"):
        check_batch(torch.zeros(3, 4, 4), "K")
    with pytest.raises(TypeError):
        check_batch(np.zeros((1, 1, 4, 4)), "K")


def test_check_range_and_finite():
    x = torch.tensor([0.0, 0.5, 1.01])
    with pytest.raises(RangeError, match=r"got values in \[0, 1\.01\]"):
        check_range(x, "x")
    assert check_range(x, "x", tol=0.02) is x
    assert check_range(torch.zeros(0), "x", (5, 6)).numel() == 0
    with pytest.raises(RangeError, match="2 non-finite"):
        check_finite(torch.tensor([math.inf, -math.inf, 0.0]), "x")
    assert check_finite(torch.tensor([1, 2]), "x").tolist() == [1, 2]  # integers are always finite


def test_check_int_and_positive_int():
    assert check_int(np.int64(3), "n") == 3 and type(check_int(np.int64(3), "n")) is int
    assert check_int(0, "n", minimum=0) == 0
    for bad in (True, 2.0, "2", None):
        with pytest.raises(TypeError, match="n must be an int"):
            check_positive_int(bad, "n")
    with pytest.raises(RangeError, match="f: n must be an int >= 1, got 0"):
        check_positive_int(0, "n", "f")
    with pytest.raises(RangeError, match=r"q must be an int in 1\.\.100, got 101"):
        check_int(101, "q", minimum=1, maximum=100)


def test_check_probability():
    assert check_probability(1, "p") == 1.0 and check_probability(np.float32(0.25), "p") == 0.25
    for bad in ("0.5", None, True):
        with pytest.raises(TypeError, match="p must be a probability"):
            check_probability(bad, "p")
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(RangeError, match=r"p must be a probability in \[0, 1\]"):
            check_probability(bad, "p")


def test_check_same_length_and_choice():
    assert check_same_length({"a": [1, 2], "b": torch.zeros(2, 3)}) == 2
    with pytest.raises(ShapeError, match=r"f: a, b must have the same length \(pairs\), got 2, 3"):
        check_same_length({"a": [1, 2], "b": [1, 2, 3]}, "f", why="pairs")
    assert check_choice("fold", "stage", ("fold", "match")) == "fold"
    with pytest.raises(ValueError, match="f: unknown stage 'x'; expected one of 'fold', 'match'"):
        check_choice("x", "stage", ("fold", "match"), "f")


# ------------------------------------------------------------------ every entry point: same defect, same type
_GOOD = _good()
_ETC = cipher_for(EtCKey.generate(image_size=16, block_size=8, seed=0))

# entry point -> (call with the bad batch in its images argument, that argument's name, accepts floats)
ENTRIES = {
    "ssim": (lambda bad: ssim(bad, _GOOD), "x", True),
    "psnr": (lambda bad: psnr(bad, _GOOD), "x", True),
    "fr_attack": (lambda bad: fr_attack(test_protected=bad), "test_protected", False),
    "itn_attack": (lambda bad: itn_attack(train_plain=_GOOD, train_protected=_GOOD, test_protected=bad, epochs=1,
                                          width=2, depth=1, progress=False), "test_protected", True),
    "gan_attack": (lambda bad: gan_attack(train_plain=_GOOD, train_protected=_GOOD, test_protected=bad, block_size=4,
                                          epochs=1), "test_protected", False),
    "jigsaw.solve": (lambda bad: J.solve(bad, 8), "y", True),
    "jigsaw_attack": (lambda bad: J.jigsaw_attack(test_protected=bad, block_size=8), "test_protected", True),
    "le_statistics_attack": (lambda bad: le_statistics_attack(train_plain=_GOOD, test_protected=bad),
                             "test_protected", False),
    "instahide_attack": (lambda bad: instahide_attack(encodings=bad, n_originals=2), "encodings", True),
    "carlini_attack": (lambda bad: carlini_attack(encodings=bad, targets=torch.ones(4, 2), n_private=2, k_private=1,
                                                  public=_GOOD.float() / 255), "encodings", True),
    "encoded_size": (lambda bad: encoded_size(bad, "png"), "x", False),
    "EtC cipher": (lambda bad: _ETC(bad), "EtC", True),
}


def _nan(x: torch.Tensor) -> torch.Tensor:
    y = x.float() / 255
    y[0, 0, 0, 0] = math.nan
    return y


# defect -> (make the bad batch, the exception type every entry point raises)
DEFECTS = {
    "3-D tensor": (lambda x: x[0], ShapeError),
    "float 0..255 where [0, 1] or uint8 is expected": (lambda x: x.float(), ValueError),
    "NaN": (_nan, ValueError),
    "empty batch": (lambda x: x[:0], ShapeError),
    "int64 tensor": (lambda x: x.long(), DTypeError),
    "numpy array": (lambda x: x.numpy(), TypeError),
}

# where the argument accepts any float values (InstaHide's encodings live in a declared range)
# or an empty batch (an empty batch codes to no files, encrypts to an empty batch, has no per-image
# scores), that defect is not a defect there
_NOT_A_DEFECT = {("instahide_attack", "float 0..255 where [0, 1] or uint8 is expected"),
                 ("carlini_attack", "float 0..255 where [0, 1] or uint8 is expected"),
                 ("encoded_size", "empty batch"), ("EtC cipher", "empty batch"),
                 ("ssim", "empty batch"), ("psnr", "empty batch")}


@pytest.mark.parametrize("defect", list(DEFECTS))
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_same_defect_same_exception_everywhere(entry, defect):
    if (entry, defect) in _NOT_A_DEFECT:
        pytest.skip("valid input for this entry point")
    call, name, floats = ENTRIES[entry]
    make, expected = DEFECTS[defect]
    with pytest.raises(expected) as info:
        call(make(_GOOD))
    err = info.value
    if defect in ("float 0..255 where [0, 1] or uint8 is expected", "NaN"):
        # the two ways a float batch can be wrong: floats not allowed at all, or the wrong values
        assert type(err) is (RangeError if floats else DTypeError), (entry, type(err))
    msg = str(err)
    assert "got" in msg, msg  # says what it got
    assert name in msg, (name, msg)  # names the argument


# ------------------------------------------------------------------ one calling convention for the attacks
@pytest.mark.parametrize("call", [
    lambda x: fr_attack(x),
    lambda x: itn_attack(x, x, x, epochs=1),
    lambda x: gan_attack(x, x, x, block_size=4),
    lambda x: le_statistics_attack(x, x),
    lambda x: J.jigsaw_attack(x, 8),
    lambda x: instahide_attack(x.float() / 255, 2),
], ids=["fr", "itn", "gan", "le_stats", "jigsaw", "instahide"])
def test_attacks_are_keyword_only(call):
    with pytest.raises(TypeError, match="positional argument"):
        call(_GOOD)


def test_attack_argument_names_agree():
    import inspect

    def kwonly(f):
        ps = inspect.signature(f).parameters.values()
        assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in ps), f.__name__
        return {p.name for p in ps}

    images = {"train_plain", "train_protected", "test_protected", "test_plain"}
    assert kwonly(itn_attack) & images == {"train_plain", "train_protected", "test_protected"}
    assert kwonly(gan_attack) & images == {"train_plain", "train_protected", "test_protected"}
    assert kwonly(fr_attack) & images == {"train_plain", "test_protected"}
    assert kwonly(le_statistics_attack) & images == {"train_plain", "test_protected"}
    assert kwonly(J.jigsaw_attack) & images == {"test_protected", "test_plain"}
    assert {"encodings"} <= kwonly(instahide_attack) and {"encodings"} <= kwonly(carlini_attack)
