"""Ciphers: exact inverses, agreement with direct per-block references written from the
definitions, the float path, errors, buffers and state dicts.

The references below loop over images, blocks and pixels on purpose: they restate each
definition as plainly as possible, independently of the index-table code under test.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppml._checks import ShapeError
from ppml.ciphers import ELE, LE, PE, BlockGrid, BlockScramble, Cipher, EtC, cipher_for
from ppml.keys import BlockScrambleKey, ELEKey, EtCKey, LEKey, PEKey

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = {"etc": EtCKey, "block_scramble": BlockScrambleKey, "pe": PEKey, "le": LEKey, "ele": ELEKey}


def make(scheme, image_size, block_size, channels=3, seed=0):
    cls = KEYS[scheme]
    if cls is PEKey:
        key = cls.generate(image_size=image_size, channels=channels, seed=seed)
    else:
        key = cls.generate(image_size=image_size, block_size=block_size, channels=channels, seed=seed)
    return cipher_for(key)


def images(n, c, h, w, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8))


def blocks_of(img, b):
    """(C, H, W) → list of (C, B, B) views, row-major."""
    _, h, w = img.shape
    return [img[:, by * b:(by + 1) * b, bx * b:(bx + 1) * b] for by in range(h // b) for bx in range(w // b)]


def place(out, i, blk, b):
    w = out.shape[2]
    by, bx = divmod(i, w // b)
    out[:, by * b:(by + 1) * b, bx * b:(bx + 1) * b] = blk


# ----------------------------------------------------------------------------- references
def etc_reference(x: np.ndarray, key: EtCKey) -> np.ndarray:
    b, out = key.block_size, np.empty_like(x)
    perms = list(itertools.permutations(range(x.shape[1])))
    for img, res in zip(x, out):
        src = blocks_of(img, b)
        for i in range(key.n_blocks):
            blk = src[key.block_perm[i]]                          # 1. block permutation
            code = int(key.rot_flip[i])
            blk = np.rot90(blk, code % 4, axes=(1, 2))            # 2. rotate as np.rot90 over (H, W)
            if code >= 4:
                blk = np.stack([np.fliplr(ch) for ch in blk])     #    then flip left-right
            if key.negpos[i]:
                blk = blk ^ 255                                   # 3. negative-positive, all channels
            blk = blk[list(perms[key.channel_perm[i]])]           # 4. channel j <- channel perm[j]
            place(res, i, blk, b)
    return out


def block_scramble_reference(x: np.ndarray, key: BlockScrambleKey) -> np.ndarray:
    out = np.empty_like(x)
    for img, res in zip(x, out):
        src = blocks_of(img, key.block_size)
        for i, j in enumerate(key.block_perm):
            place(res, i, src[j], key.block_size)
    return out


def pe_reference(x: np.ndarray, key: PEKey) -> np.ndarray:
    n, c, h, w = x.shape
    perms = list(itertools.permutations(range(c)))
    out = np.empty_like(x)
    for k in range(n):
        for y in range(h):
            for xx in range(w):
                neg = [x[k, ch, y, xx] ^ (255 if key.negpos[ch, y, xx] else 0) for ch in range(c)]
                p = perms[key.channel_perm[y, xx]]
                for j in range(c):
                    out[k, j, y, xx] = neg[p[j]]
    return out


def le_block_reference(blk: np.ndarray, perm, invert) -> np.ndarray:
    """LE on one (C, B, B) block, straight from the definition."""
    c, b, _ = blk.shape
    flat = blk.transpose(1, 2, 0).reshape(-1)                    # (row, col, channel) order
    nib = np.concatenate([flat & 15, flat >> 4])                  # [all low | all high]
    out = np.array([nib[perm[j]] ^ (15 if invert[j] else 0) for j in range(nib.size)], dtype=np.uint8)
    d = flat.size
    return (out[:d] | (out[d:] << 4)).reshape(b, b, c).transpose(2, 0, 1)


def ele_reference(x: np.ndarray, key: ELEKey) -> np.ndarray:
    b, out = key.block_size, np.empty_like(x)
    for img, res in zip(x, out):
        src = blocks_of(img, b)
        enc = [le_block_reference(blk, key.perm[k], key.invert[k]) for k, blk in enumerate(src)]  # by source
        for i, j in enumerate(key.block_perm):
            place(res, i, enc[j], b)
    return out


def tanaka_do_scramble(x_nhwc: np.ndarray, key: np.ndarray, block: int) -> np.ndarray:
    """Tanaka's reference scramble, restated literally from its definition: split into
    blocks, (row, col, channel) bytes, nibbles [low | high], invert where rev, gather by the
    key, invert where rev again, recombine."""
    n, h, w, c = x_nhwc.shape
    rev = key > key.size / 2
    x = x_nhwc.reshape(n, h // block, block, w // block, block, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(n, h // block, w // block, block * block * c)
    nib = np.concatenate([x & 0xF, x >> 4], axis=3)
    nib[..., rev] = (15 - nib[..., rev].astype(np.int32)).astype(np.uint8)
    nib = nib[..., key]
    nib[..., rev] = (15 - nib[..., rev].astype(np.int32)).astype(np.uint8)
    d = block * block * c
    x = (nib[..., d:] << 4) + nib[..., :d]
    x = x.reshape(n, h // block, w // block, block, block, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h, w, c)


# ----------------------------------------------------------------------------- round trips
geometry = st.sampled_from([
    ((16, 16), 4), ((16, 16), 8), ((16, 16), 16), ((32, 32), 4), ((32, 32), 8), ((32, 32), 16),
    ((16, 32), 8), ((8, 24), 4),
])


@SETTINGS
@given(scheme=st.sampled_from(sorted(KEYS)), geo=geometry, channels=st.sampled_from([1, 3]),
       seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3), as_float=st.booleans())
def test_inverse_of_forward_is_exact(scheme, geo, channels, seed, n, as_float):
    (h, w), b = geo
    cipher = make(scheme, (h, w), b, channels, seed)
    x = images(n, channels, h, w, seed)
    if as_float:
        x = x.to(torch.float32) / 255
    y = cipher(x)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert torch.equal(cipher.inverse(y), x)
    assert torch.equal(cipher(cipher.inverse(x)), x)  # a bijection both ways


@pytest.mark.parametrize("scheme", sorted(KEYS))
@pytest.mark.parametrize("block", [4, 8, 16])
def test_forward_changes_the_image(scheme, block):
    x = images(4, 3, 64, 64)  # at least 16 blocks, so a random key is never the identity
    for seed in range(3):
        y = make(scheme, 64, block, seed=seed)(x)
        changed = (y != x).float().mean().item()
        assert changed > 0.3, (scheme, block, seed, changed)


# ----------------------------------------------------------------------------- references
@SETTINGS
@given(geo=geometry, channels=st.sampled_from([1, 3]), seed=st.integers(0, 2**32 - 1))
def test_etc_matches_reference(geo, channels, seed):
    (h, w), b = geo
    key = EtCKey.generate(image_size=(h, w), block_size=b, channels=channels, seed=seed)
    x = images(2, channels, h, w, seed)
    assert np.array_equal(EtC(key=key)(x).numpy(), etc_reference(x.numpy(), key))


def test_etc_every_code_matches_reference():
    # 4 blocks x 8 codes x 6 channel permutations x 2 signs, each one visited
    for rot, cp, neg in itertools.product(range(8), range(6), range(2)):
        key = EtCKey(np.array([2, 0, 3, 1]), np.array([rot, 0, rot, 7 - rot]), np.array([neg, 1 - neg, 0, 1]),
                     np.array([cp, 5 - cp, 0, cp]), image_size=8, block_size=4)
        x = images(1, 3, 8, 8, rot * 12 + cp * 2 + neg)
        assert np.array_equal(EtC(key=key)(x).numpy(), etc_reference(x.numpy(), key)), (rot, cp, neg)


def test_etc_rotation_matches_torch_rot90_and_flip():
    x = images(1, 3, 8, 8)
    for code in range(8):
        key = EtCKey(np.arange(1), np.array([code]), np.zeros(1, int), np.zeros(1, int), image_size=8, block_size=8)
        expected = torch.rot90(x, code % 4, dims=(2, 3))
        if code >= 4:
            expected = torch.flip(expected, dims=(3,))
        assert torch.equal(EtC(key=key)(x), expected), code


def test_etc_identity_key_is_identity():
    key = EtCKey(np.arange(4), np.zeros(4, int), np.zeros(4, int), np.zeros(4, int), image_size=16, block_size=8)
    x = images(2, 3, 16, 16)
    assert torch.equal(EtC(key=key)(x), x)


@SETTINGS
@given(geo=geometry, seed=st.integers(0, 2**32 - 1))
def test_block_scramble_matches_reference(geo, seed):
    (h, w), b = geo
    key = BlockScrambleKey.generate(image_size=(h, w), block_size=b, seed=seed)
    x = images(2, 3, h, w, seed)
    assert np.array_equal(BlockScramble(key=key)(x).numpy(), block_scramble_reference(x.numpy(), key))


@settings(max_examples=15, deadline=None)
@given(size=st.sampled_from([(4, 4), (6, 10), (8, 8)]), channels=st.sampled_from([1, 3]),
       seed=st.integers(0, 2**32 - 1))
def test_pe_matches_reference(size, channels, seed):
    key = PEKey.generate(image_size=size, channels=channels, seed=seed)
    x = images(2, channels, *size, seed)
    assert np.array_equal(PE(key=key)(x).numpy(), pe_reference(x.numpy(), key))


@settings(max_examples=15, deadline=None)
@given(geo=st.sampled_from([((8, 8), 4), ((8, 16), 4), ((16, 16), 8), ((4, 4), 2)]),
       channels=st.sampled_from([1, 3]), seed=st.integers(0, 2**32 - 1))
def test_le_matches_block_reference(geo, channels, seed):
    (h, w), b = geo
    key = LEKey.generate(image_size=(h, w), block_size=b, channels=channels, seed=seed)
    x = images(2, channels, h, w, seed)
    expected = np.empty_like(x.numpy())
    for img, res in zip(x.numpy(), expected):
        for i, blk in enumerate(blocks_of(img, b)):
            place(res, i, le_block_reference(blk, key.perm, key.invert), b)
    assert np.array_equal(LE(key=key)(x).numpy(), expected)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.sampled_from([(32, 32), (8, 12)]))
def test_le_equals_tanaka_reference_bit_for_bit(seed, size):
    ref_key = np.random.default_rng(seed).permutation(96)
    x = images(3, 3, *size, seed)
    expected = tanaka_do_scramble(x.numpy().transpose(0, 2, 3, 1).copy(), ref_key, 4).transpose(0, 3, 1, 2)
    le = LE(key=LEKey.from_reference(ref_key, image_size=size))
    assert np.array_equal(le(x).numpy(), expected)
    assert torch.equal(le.inverse(torch.from_numpy(np.ascontiguousarray(expected))), x)


# A frozen vector: one 4x4x3 block (values 5*i in (row, col, channel) order) under Tanaka's
# key np.random.default_rng(0).permutation(96). Checked by hand for the first byte: out nibble 0
# = low nibble of byte 36 (180 -> 4) inverted (rev[36] = 1, rev[0] = 0) = 11; out nibble 48 = low
# nibble of byte 3 (15), not inverted -> byte 0 = 0xFB = 251.
TANAKA_KEY_SEED0 = [36, 87, 5, 13, 52, 20, 93, 34, 50, 27, 16, 94, 11, 10, 66, 8, 82, 9, 90, 19, 89, 75, 65, 67,
                    39, 4, 25, 55, 71, 62, 23, 44, 42, 53, 80, 68, 60, 15, 30, 2, 35, 43, 17, 70, 28, 83, 18, 72,
                    3, 1, 57, 24, 64, 21, 47, 0, 6, 86, 45, 22, 26, 51, 37, 81, 49, 74, 88, 91, 40, 61, 12, 32,
                    92, 46, 58, 14, 73, 38, 84, 31, 85, 48, 77, 76, 7, 63, 69, 78, 59, 54, 29, 41, 56, 33, 79, 95]
TANAKA_OUT_SEED0 = [251, 172, 41, 129, 81, 107, 65, 5, 16, 184, 239, 30, 40, 242, 149, 87, 250, 141, 194, 47,
                    140, 71, 197, 5, 211, 107, 205, 157, 136, 235, 76, 188, 178, 14, 106, 137, 60, 75, 102, 154,
                    192, 232, 229, 217, 211, 170, 101, 231]


def test_tanaka_vectors_fixed():
    ref_key = np.array(TANAKA_KEY_SEED0)
    x = torch.arange(48, dtype=torch.uint8).mul(5).reshape(1, 4, 4, 3).permute(0, 3, 1, 2).contiguous()
    y = LE(key=LEKey.from_reference(ref_key, image_size=4))(x)
    assert y.permute(0, 2, 3, 1).reshape(-1).tolist() == TANAKA_OUT_SEED0
    expected = tanaka_do_scramble(x.permute(0, 2, 3, 1).numpy().copy(), ref_key, 4)
    assert expected.reshape(-1).tolist() == TANAKA_OUT_SEED0  # the in-test reference agrees


@settings(max_examples=15, deadline=None)
@given(geo=st.sampled_from([((8, 8), 4), ((8, 16), 4), ((16, 16), 8)]), channels=st.sampled_from([1, 3]),
       seed=st.integers(0, 2**32 - 1))
def test_ele_matches_reference(geo, channels, seed):
    (h, w), b = geo
    key = ELEKey.generate(image_size=(h, w), block_size=b, channels=channels, seed=seed)
    x = images(2, channels, h, w, seed)
    assert np.array_equal(ELE(key=key)(x).numpy(), ele_reference(x.numpy(), key))


def test_ele_with_equal_rows_and_no_shuffle_is_le():
    le_key = LEKey.generate(image_size=16, block_size=4, seed=3)
    n = 16
    ele_key = ELEKey(np.arange(n), np.tile(le_key.perm, (n, 1)), np.tile(le_key.invert, (n, 1)),
                     image_size=16, block_size=4)
    x = images(2, 3, 16, 16)
    assert torch.equal(ELE(key=ele_key)(x), LE(key=le_key)(x))


def test_ele_key_rows_follow_the_source_block():
    # block 0 keeps its place but moves after block 1; only block 1's key inverts everything
    key = ELEKey(np.array([1, 0]), np.tile(np.arange(96), (2, 1)), np.stack([np.zeros(96, int), np.ones(96, int)]),
                 image_size=(4, 8), block_size=4)
    x = images(1, 3, 4, 8)
    y = ELE(key=key)(x)
    assert torch.equal(y[..., :4], x[..., 4:] ^ 255)  # source block 1, inverted by its own key
    assert torch.equal(y[..., 4:], x[..., :4])


# ----------------------------------------------------------------------------- float path
@pytest.mark.parametrize("scheme", sorted(KEYS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_float_path_equals_uint8_path_over_255(scheme, dtype):
    cipher = make(scheme, 16, 4, seed=1)
    x = images(3, 3, 16, 16)
    y8 = cipher(x)
    yf = cipher(x.to(dtype) / 255)
    assert yf.dtype == dtype and torch.equal(yf, y8.to(dtype) / 255)
    assert torch.equal(cipher.inverse(yf), x.to(dtype) / 255)
    # arbitrary floats are quantised to 8 bits first
    xr = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    assert torch.equal(cipher(xr), cipher(torch.round(xr * 255).to(torch.uint8)).double() / 255)


def test_every_uint8_value_survives_float_round_trip():
    cipher = make("le", 16, 4, channels=1, seed=0)
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    for dtype in (torch.float16, torch.float32, torch.float64):
        xf = x.to(dtype) / 255
        assert torch.equal(cipher.inverse(cipher(xf)), xf)


# ----------------------------------------------------------------------------- errors
@pytest.fixture
def etc():
    return EtC(key=EtCKey.generate(image_size=32, block_size=8, seed=0))


def test_error_size_not_divisible_at_forward(etc):
    with pytest.raises(ValueError, match="image size 30x30 is not divisible by block size 8: expected 32x32"):
        etc(images(1, 3, 30, 30))
    with pytest.raises(ValueError, match="image size 32x36 is not divisible by block size 8"):
        etc.inverse(images(1, 3, 32, 36))


def test_error_key_for_another_image_size(etc):
    with pytest.raises(ValueError, match=r"expected 32x32 images \(the key's image size\), got 64x64"):
        etc(images(1, 3, 64, 64))
    le = make("le", 32, 4)
    with pytest.raises(ValueError, match="expected 32x32 images"):
        le(images(1, 3, 16, 16))
    pe = make("pe", 32, 1)
    with pytest.raises(ValueError, match="expected 32x32 images"):
        pe(images(1, 3, 31, 31))


def test_error_key_for_another_block_size():
    key = EtCKey.generate(image_size=32, block_size=16, seed=0)
    with pytest.raises(ValueError, match=r"block_size=8 does not match the key: expected 16 \(the key's block size\)"):
        EtC(key=key, block_size=8)
    assert EtC(key=key, block_size=16).block_size == 16
    with pytest.raises(ValueError, match=r"expected 1 \(PE has no blocks\)"):
        PE(key=PEKey.generate(image_size=8, seed=0), block_size=4)
    with pytest.raises(ValueError, match="does not match the key: expected 4"):
        cipher_for(ELEKey.generate(image_size=8, block_size=4, seed=0), block_size=8)


def test_error_key_of_another_scheme():
    with pytest.raises(ValueError, match="EtC needs a key of type EtCKey, got LEKey"):
        EtC(key=LEKey.generate(image_size=32, block_size=4, seed=0))
    with pytest.raises(ValueError, match="no cipher for str"):
        cipher_for("not a key")


def test_error_wrong_channels(etc):
    with pytest.raises(ValueError, match=r"expected 3 channel\(s\) \(the key's\), got 1"):
        etc(images(1, 1, 32, 32))
    grey = make("block_scramble", 32, 8, channels=1)
    with pytest.raises(ValueError, match=r"expected 1 channel\(s\) \(the key's\), got 3"):
        grey(images(1, 3, 32, 32))


def test_error_float_out_of_range(etc):
    x = images(2, 3, 32, 32).float() / 255
    for bad, shown in ((x * 2, "2.0"), (x - 0.5, "-0.5"), (x * 255, "255.0")):
        with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\], got values in \[.*" + shown):
            etc(bad)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*nan"):
        etc.inverse(x)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.int8, torch.bfloat16])
def test_error_bad_dtype(etc, dtype):
    with pytest.raises(ValueError, match=f"expected dtype uint8, or float16/32/64 in \\[0, 1\\], got {dtype}"):
        etc(torch.zeros(1, 3, 32, 32, dtype=dtype))


def test_error_not_a_batch(etc):
    with pytest.raises(ShapeError, match=r"expected a batch of shape \(N, C, H, W\), got shape \(3, 32, 32\)"):
        etc(images(1, 3, 32, 32)[0])
    with pytest.raises(TypeError, match="expected a torch.Tensor"):  # ValueError before ppml._checks
        etc(np.zeros((1, 3, 32, 32), np.uint8))


def test_empty_batch(etc):
    x = torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
    assert etc(x).shape == x.shape and etc(x.float()).shape == x.shape


# ----------------------------------------------------------------------------- module behaviour
@pytest.mark.parametrize("scheme", sorted(KEYS))
def test_buffers_state_dict_and_device(scheme):
    cipher = make(scheme, 16, 4)
    sd = cipher.state_dict()
    names = {"index", "mask", "inverse_index", "inverse_mask"} if scheme in ("etc", "block_scramble", "pe") else \
        {p + n for p in ("", "inverse_") for n in ("index_lo", "shift_lo", "index_hi", "shift_hi", "mask")}
    assert set(sd) == names
    assert all(v.dtype in (torch.int64, torch.uint8) for v in sd.values())
    assert not list(cipher.parameters())
    x = images(2, 3, 16, 16)
    y = cipher(x)
    moved = cipher.to("cpu").to(torch.float64)  # dtype casts leave integer buffers alone
    assert all(v.dtype in (torch.int64, torch.uint8) for v in moved.state_dict().values())
    assert torch.equal(moved(x), y)
    # a fresh cipher from the same key loads the state dict; one from another key refuses it
    twin = cipher_for(cipher.key)
    twin.load_state_dict(sd)
    other = make(scheme, 16, 4, seed=99)
    with pytest.raises(ValueError, match="comes from another key"):
        other.load_state_dict(sd)


def test_cipher_inside_a_model_moves_with_it():
    model = torch.nn.Sequential(make("etc", 16, 4))
    model.to("cpu")
    assert model[0].index.device.type == "cpu"


@pytest.mark.parametrize("scheme", sorted(KEYS))
def test_cipher_properties_and_repr(scheme):
    cipher = make(scheme, (16, 32), 8)
    assert isinstance(cipher, Cipher) and isinstance(cipher, torch.nn.Module)
    assert cipher.image_size == (16, 32) and cipher.channels == 3
    assert cipher.block_size == (1 if scheme == "pe" else 8)
    assert cipher.key.scheme == scheme
    r = repr(cipher)
    assert cipher.key.fingerprint in r and "tensor" not in r and len(r) < 150


def test_non_contiguous_and_channels_last_input():
    cipher = make("ele", 16, 4)
    x = images(4, 3, 16, 16)
    y = cipher(x)
    assert torch.equal(cipher(x.contiguous(memory_format=torch.channels_last)), y)
    assert torch.equal(cipher(torch.cat([x, x], 0)[::2]), y[[0, 2, 0, 2]])
    assert torch.equal(cipher(x.transpose(2, 3).contiguous().transpose(2, 3)), y)  # strided view


@pytest.mark.parametrize("scheme", ["etc", "le"])
def test_cpu_chunking_gives_the_same_result(scheme):
    whole, chunked = make(scheme, 16, 4, seed=5), make(scheme, 16, 4, seed=5)
    whole.cpu_chunk_bytes = 1 << 40
    chunked.cpu_chunk_bytes = 2 * 3 * 16 * 16  # two images per chunk; 7 images → 4 chunks
    x = images(7, 3, 16, 16)
    y = whole(x)
    assert torch.equal(chunked(x), y) and torch.equal(chunked.inverse(y), x)
    xf = x.double() / 255
    assert torch.equal(chunked(xf), whole(xf)) and torch.equal(chunked.inverse(chunked(xf)), xf)


# ----------------------------------------------------------------------------- key sets (a key per image)
def make_keys(scheme, image_size, block_size, channels, seeds):
    cls = KEYS[scheme]
    if cls is PEKey:
        return [cls.generate(image_size=image_size, channels=channels, seed=s) for s in seeds]
    return [cls.generate(image_size=image_size, block_size=block_size, channels=channels, seed=s) for s in seeds]


def reference(scheme, x: np.ndarray, key) -> np.ndarray:
    """The literal per-block reference of ``scheme`` (defined above) on a uint8 batch."""
    if scheme == "le":
        out = np.empty_like(x)
        for img, res in zip(x, out):
            for i, blk in enumerate(blocks_of(img, key.block_size)):
                place(res, i, le_block_reference(blk, key.perm, key.invert), key.block_size)
        return out
    return {"etc": etc_reference, "block_scramble": block_scramble_reference, "pe": pe_reference,
            "ele": ele_reference}[scheme](x, key)


small_geometry = st.sampled_from([((8, 8), 4), ((8, 16), 4), ((16, 16), 8), ((4, 4), 2)])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scheme=st.sampled_from(sorted(KEYS)), geo=small_geometry, channels=st.sampled_from([1, 3]),
       num_keys=st.integers(1, 4), n=st.integers(0, 6), seed=st.integers(0, 2**32 - 1), as_float=st.booleans())
def test_key_set_encrypts_each_image_with_its_own_key(scheme, geo, channels, num_keys, n, seed, as_float):
    (h, w), b = geo
    keys = make_keys(scheme, (h, w), b, channels, [seed + i for i in range(num_keys)])
    cipher = cipher_for(keys)
    assert cipher.num_keys == num_keys and cipher.keys == tuple(keys)
    x = images(n, channels, h, w, seed)
    ids = torch.from_numpy(np.random.default_rng(seed).integers(0, num_keys, n))
    # image j under key ids[j], by the literal reference, one image at a time
    expected = torch.from_numpy(np.concatenate(
        [reference(scheme, x[j:j + 1].numpy(), keys[int(k)]) for j, k in enumerate(ids)] or [x.numpy()[:0]]))
    xin = x.double() / 255 if as_float else x
    y = cipher(xin, key_ids=ids)
    assert torch.equal(y, expected.double() / 255 if as_float else expected)
    assert torch.equal(cipher.inverse(y, key_ids=ids), xin)
    # ... and equals the single-key cipher of that key, image by image
    for j, k in enumerate(ids.tolist()):
        assert torch.equal(y[j:j + 1], cipher_for(keys[k])(xin[j:j + 1]))


@pytest.mark.parametrize("scheme", sorted(KEYS))
def test_key_set_inverse_with_other_ids_does_not_decrypt(scheme):
    keys = make_keys(scheme, 16, 4, 3, [1, 2])
    cipher = cipher_for(keys)
    x = images(4, 3, 16, 16)
    ids = torch.tensor([0, 1, 0, 1])
    y = cipher(x, key_ids=ids)
    wrong = cipher.inverse(y, key_ids=1 - ids)
    assert all(not torch.equal(wrong[j], x[j]) for j in range(4))  # the ids matter, per image


@pytest.mark.parametrize("scheme", sorted(KEYS))
def test_one_key_set_is_the_single_key_cipher(scheme):
    key = make_keys(scheme, 16, 4, 3, [7])[0]
    single, as_set = cipher_for(key), type(cipher_for(key)).from_keys([key])
    assert as_set.num_keys == 1 and as_set.key == key
    sd_single, sd_set = single.state_dict(), as_set.state_dict()
    assert sd_single.keys() == sd_set.keys()
    assert all(torch.equal(sd_single[k], sd_set[k]) and sd_single[k].dtype == sd_set[k].dtype for k in sd_single)
    x = images(5, 3, 16, 16)
    y = single(x)
    zeros = torch.zeros(5, dtype=torch.int64)
    assert torch.equal(as_set(x), y) and torch.equal(single(x, key_ids=zeros), y)
    assert torch.equal(as_set(x, key_ids=zeros), y) and torch.equal(as_set.inverse(y, key_ids=zeros), x)


@pytest.mark.parametrize("scheme", ["etc", "le"])
def test_key_set_cpu_chunking_gives_the_same_result(scheme):
    keys = make_keys(scheme, 16, 4, 3, range(5))
    whole, chunked = cipher_for(keys), cipher_for(keys)
    whole.keyset_cpu_chunk_bytes = 1 << 40
    chunked.keyset_cpu_chunk_bytes = 2 * 3 * 16 * 16  # two images per chunk; 7 images → 4 chunks
    x = images(7, 3, 16, 16)
    ids = torch.tensor([4, 0, 3, 3, 1, 2, 0])
    y = whole(x, key_ids=ids)
    assert torch.equal(chunked(x, key_ids=ids), y) and torch.equal(chunked.inverse(y, key_ids=ids), x)


def test_key_set_tables_are_stacked_and_compact():
    keys = EtCKey.generate_many(3, image_size=16, block_size=4, seed=0)
    cipher = EtC.from_keys(keys)
    assert cipher.index.shape == (3, 768) and cipher.index.dtype == torch.int16
    assert cipher.mask.shape == (3, 768) and cipher.mask.dtype == torch.uint8
    for k, key in enumerate(keys):  # row k is key k's single-key table
        single = EtC(key=key)
        assert torch.equal(cipher.index[k].long(), single.index)
        assert torch.equal(cipher.inverse_mask[k], single.inverse_mask)
    # negation folded into the index for the per-image kernel: derived, never saved
    assert cipher._negate_fold and "index_neg" not in cipher.state_dict()
    neg = (cipher.mask == 255).to(torch.int64)
    assert torch.equal(cipher.index_neg.long(), cipher.index.long() + 768 * neg)
    assert not BlockScramble.from_keys(BlockScrambleKey.generate_many(2, image_size=16, block_size=4, seed=0))._negate_fold
    assert "num_keys=3" in repr(cipher) and "tensor" not in repr(cipher)
    with pytest.raises(ValueError, match=r"EtC holds 3 keys: use \.keys\[i\]"):
        cipher.key
    twin, other = EtC.from_keys(keys), EtC.from_keys(keys[::-1])
    twin.load_state_dict(cipher.state_dict())
    with pytest.raises(ValueError, match="comes from another key"):
        other.load_state_dict(cipher.state_dict())


@pytest.fixture
def etc_set():
    return EtC.from_keys(EtCKey.generate_many(3, image_size=16, block_size=4, seed=0))


@pytest.mark.parametrize("bad, problem", [
    (None, r"EtC holds 3 keys: pass key_ids=, the key index of every image \(an int64 tensor of shape \(4,\)"),
    ([0, 1, 2, 0], r"key_ids must be a torch.Tensor, got list.*torch.as_tensor\(ids, dtype=torch.long"),
    (torch.tensor([0, 1, 2, 0], dtype=torch.int32), r"key_ids must have dtype int64, got torch.int32.*key_ids.long\(\)"),
    (torch.tensor([0., 1., 2., 0.]), r"key_ids must have dtype int64, got torch.float32"),
    (torch.tensor([0, 1, 2]), r"key_ids must have shape \(4,\), one key index per image, got shape \(3,\)"),
    (torch.zeros(4, 1, dtype=torch.int64), r"key_ids must have shape \(4,\).*got shape \(4, 1\)"),
    (torch.tensor([0, 1, 3, 0]), r"key_ids must lie in 0\.\.2 \(this cipher holds 3 key\(s\)\), got 3"),
    (torch.tensor([0, -1, 2, 0]), r"key_ids must lie in 0\.\.2 .*got -1"),
    (torch.zeros(4, dtype=torch.int64, device="meta"),
     r"key_ids is on meta but the images are on cpu: .*use key_ids.to\(x.device\)"),
])
def test_error_bad_key_ids(etc_set, bad, problem):
    x = images(4, 3, 16, 16)
    for fn in (etc_set, etc_set.inverse):
        with pytest.raises(ValueError, match=problem):
            fn(x, key_ids=bad)


def test_error_single_key_ids_out_of_range():
    with pytest.raises(ValueError, match=r"key_ids must lie in 0\.\.0 \(this cipher holds 1 key\(s\)\), got 1"):
        make("pe", 8, 1)(images(2, 3, 8, 8), key_ids=torch.tensor([0, 1]))


def test_error_mixed_key_sets():
    etc_keys = EtCKey.generate_many(2, image_size=16, block_size=4, seed=0)
    with pytest.raises(ValueError, match=r"EtC: key 2 is a LEKey, expected EtCKey: a key set holds keys of one scheme"):
        EtC.from_keys([*etc_keys, LEKey.generate(image_size=16, block_size=4, seed=0)])
    with pytest.raises(ValueError, match=r"key 1 is for 16x16 images in 8x8 blocks with 3 channel\(s\) but key 0 is "
                                         r"for 16x16 images in 4x4 blocks .*one geometry"):
        EtC.from_keys([etc_keys[0], EtCKey.generate(image_size=16, block_size=8, seed=0)])
    with pytest.raises(ValueError, match="key 1 is for 32x32 images"):
        cipher_for([etc_keys[0], EtCKey.generate(image_size=32, block_size=4, seed=0)])
    with pytest.raises(ValueError, match=r"key 1 is for 16x16 images in 4x4 blocks with 1 channel\(s\)"):
        cipher_for([etc_keys[0], EtCKey.generate(image_size=16, block_size=4, channels=1, seed=0)])
    with pytest.raises(ValueError, match="keys= is empty"):
        EtC.from_keys([])
    with pytest.raises(ValueError, match="the key set is empty"):
        cipher_for([])
    with pytest.raises(ValueError, match="keys= must be a sequence of EtCKeys, got EtCKey; for one key use key="):
        EtC(keys=etc_keys[0])
    with pytest.raises(ValueError, match="pass exactly one of key= .* got both"):
        EtC(key=etc_keys[0], keys=etc_keys)
    with pytest.raises(ValueError, match="got neither"):
        EtC()
    with pytest.raises(ValueError, match=r"block_size=8 does not match the key: expected 4"):
        EtC.from_keys(etc_keys, block_size=8)


# ----------------------------------------------------------------------------- BlockGrid
def test_block_grid_blocks_match_the_literal_split():
    grid = BlockGrid((8, 12), 4, channels=3)
    x = images(2, 3, 8, 12)
    blocks = grid.to_blocks(x)
    assert blocks.shape == (2, 6, 3, 4, 4)
    for n in range(2):
        for i, blk in enumerate(blocks_of(x[n].numpy(), 4)):
            assert np.array_equal(blocks[n, i].numpy(), blk)
    assert torch.equal(grid.from_blocks(blocks), x)
    block, offset = grid.flat_layout()
    flat = np.arange(3 * 8 * 12)
    assert np.array_equal(grid.flat_index(block, offset), flat)  # (block, offset) ↔ flat index is a bijection
    assert np.array_equal(blocks.reshape(2, 6, -1)[:, block, offset].numpy(), x.reshape(2, -1).numpy())


@SETTINGS
@given(geo=geometry, n=st.integers(1, 3), seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(
    [torch.uint8, torch.float32, torch.int64]))
def test_block_grid_permute_blocks_per_image(geo, n, seed, dtype):
    (h, w), b = geo
    grid = BlockGrid((h, w), b, channels=3)
    keys = BlockScrambleKey.generate_many(n, image_size=(h, w), block_size=b, seed=seed)
    perms = torch.from_numpy(np.stack([k.block_perm for k in keys]))
    x = images(n, 3, h, w, seed).to(dtype) * (3 if dtype == torch.float32 else 1)  # any values, any dtype
    y = grid.permute_blocks(x, perms)
    assert y.dtype == dtype
    for j, key in enumerate(keys):
        assert np.array_equal(y[j:j + 1].numpy(), block_scramble_reference(x[j:j + 1].numpy(), key))


def test_block_grid_errors():
    with pytest.raises(ValueError, match="image size 30x30 is not divisible by block size 8: expected H and W to be "
                                         "multiples of 8; crop or pad"):
        BlockGrid(30, 8)
    with pytest.raises(ValueError, match="who: block_size must be a positive int, got 0"):
        BlockGrid.of(torch.zeros(1, 3, 8, 8), 0, who="who")
    with pytest.raises(ValueError, match=r"who: expected a batch of shape \(N, C, H, W\), got shape \(3, 8, 8\)"):
        BlockGrid.of(torch.zeros(3, 8, 8), 4, who="who")
    grid = BlockGrid(8, 4)
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(N, 1, 8, 8\) \(this grid's\), got shape"):
        grid.to_blocks(torch.zeros(1, 3, 8, 8))
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"perms must have shape \(4,\) or \(2, 4\)"):
        grid.permute_blocks(x, torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="block indices must lie in 0..3, got 4"):
        grid.permute_blocks(x, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="perms must be an integer tensor"):
        grid.permute_blocks(x, torch.zeros(4))


@pytest.mark.parametrize("block", [2, 4, 8, 16])
def test_block_scramble_word_gather_handles_unaligned_input(block):
    # block scrambling moves whole aligned runs of bytes, so it gathers 2/4/8-byte words; an
    # input whose rows are not word-aligned must take the byte path and give the same bytes
    keys = BlockScrambleKey.generate_many(3, image_size=16, block_size=block, seed=block)
    single, key_set = BlockScramble(key=keys[0]), BlockScramble.from_keys(keys)
    x = images(4, 3, 16, 16)
    unaligned = torch.empty(1 + x.numel(), dtype=torch.uint8)[1:].view(x.shape)
    unaligned.copy_(x)
    assert unaligned.storage_offset() == 1
    ids = torch.tensor([2, 0, 1, 2])
    expected = np.concatenate([block_scramble_reference(x[j:j + 1].numpy(), keys[k]) for j, k in enumerate(ids)])
    assert np.array_equal(key_set(unaligned, key_ids=ids).numpy(), expected)
    assert np.array_equal(key_set(x, key_ids=ids).numpy(), expected)
    assert np.array_equal(single(unaligned).numpy(), block_scramble_reference(x.numpy(), keys[0]))
    assert torch.equal(key_set.inverse(torch.from_numpy(expected), key_ids=ids), x)
