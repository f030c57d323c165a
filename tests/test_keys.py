"""Keys: generation, immutability, validation, key-space sizes and the key-file format."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle

import numpy as np
import pytest

from ppml import keys
from ppml.keys import BlockScrambleKey, ELEKey, EtCKey, LEKey, PEKey

ALL = [EtCKey, BlockScrambleKey, PEKey, LEKey, ELEKey]


def gen(cls, seed=0, image_size=16, block_size=4, channels=3):
    if cls is PEKey:
        return cls.generate(image_size=image_size, channels=channels, seed=seed)
    return cls.generate(image_size=image_size, block_size=block_size, channels=channels, seed=seed)


# ----------------------------------------------------------------------------- generation
@pytest.mark.parametrize("cls", ALL)
def test_seeded_generation_repeats_and_unseeded_differs(cls):
    assert gen(cls, seed=7) == gen(cls, seed=7)
    assert gen(cls, seed=7) != gen(cls, seed=8)
    a, b = gen(cls, seed=None), gen(cls, seed=None)
    assert a != b
    for x, y in zip(a.arrays().values(), b.arrays().values()):
        if x.size > 8:  # every array with room for it is drawn freshly
            assert not np.array_equal(x, y)


def test_seeded_generation_is_pinned():
    # A seed must give the same key on every machine and release (notebooks and papers
    # quote seeded keys); if numpy or the draw order ever changes, this fails loudly.
    k = EtCKey.generate(image_size=32, block_size=16, seed=0)
    assert {n: a.tolist() for n, a in k.arrays().items()} == {
        "block_perm": [2, 0, 1, 3], "rot_flip": [2, 0, 0, 0], "negpos": [0, 1, 1, 1], "channel_perm": [3, 3, 5, 4]}
    k = LEKey.generate(image_size=4, block_size=2, channels=1, seed=0)
    assert k.perm.tolist() == [2, 4, 3, 6, 5, 0, 1, 7] and k.invert.tolist() == [0, 1, 1, 1, 1, 1, 1, 1]


def test_seed_may_be_a_generator_or_seed_sequence():
    ss = np.random.SeedSequence(5)
    assert EtCKey.generate(image_size=32, block_size=8, seed=ss) == EtCKey.generate(
        image_size=32, block_size=8, seed=np.random.SeedSequence(5))
    rng = np.random.default_rng(1)
    k1 = LEKey.generate(image_size=32, block_size=4, seed=rng)
    k2 = LEKey.generate(image_size=32, block_size=4, seed=rng)
    assert k1 != k2  # a shared generator advances
    with pytest.raises(ValueError, match="seed must be None, an int"):
        EtCKey.generate(image_size=32, block_size=8, seed=1.5)


@pytest.mark.parametrize("cls", ALL)
def test_generated_arrays_are_valid(cls):
    k = gen(cls, seed=3, image_size=(16, 24), block_size=4)
    assert k.image_size == (16, 24)
    for name, (shape, n, kind) in k._array_specs().items():
        a = getattr(k, name)
        assert a.shape == shape and a.dtype == np.int64 and 0 <= a.min() and a.max() < n
        if kind == "perm":
            assert (np.sort(a.reshape(-1, n), axis=1) == np.arange(n)).all()


def test_generated_values_are_spread():
    k = EtCKey.generate(image_size=256, block_size=4, seed=0)  # 4096 blocks
    assert set(k.rot_flip.tolist()) == set(range(8))
    assert set(k.channel_perm.tolist()) == set(range(6))
    assert 0.45 < k.negpos.mean() < 0.55
    grey = EtCKey.generate(image_size=32, block_size=4, channels=1, seed=0)
    assert (grey.channel_perm == 0).all()


# ----------------------------------------------------------------------------- key space
def _log2fact(n: int) -> float:
    return math.log2(math.factorial(n))


@pytest.mark.parametrize("size,block,channels", [(32, 16, 3), (32, 8, 3), (32, 4, 3), (224, 16, 3), (32, 8, 1)])
def test_etc_key_space(size, block, channels):
    n = (size // block) ** 2
    expected = _log2fact(n) + n * math.log2(8 * 2 * math.factorial(channels))
    k = EtCKey.generate(image_size=size, block_size=block, channels=channels, seed=0)
    assert k.key_space_bits() == pytest.approx(expected, rel=1e-12)


def test_etc_key_space_paper_example():
    k = EtCKey.generate(image_size=32, block_size=16, seed=0)
    assert k.key_space_bits() == pytest.approx(math.log2(math.factorial(4) * 8**4 * 2**4 * 6**4))
    assert round(k.key_space_bits(), 1) == 30.9


def test_other_key_spaces():
    assert BlockScrambleKey.generate(image_size=32, block_size=8, seed=0).key_space_bits() == \
        pytest.approx(_log2fact(16))
    assert PEKey.generate(image_size=32, seed=0).key_space_bits() == pytest.approx(3072 + 1024 * math.log2(6))
    assert PEKey.generate(image_size=32, channels=1, seed=0).key_space_bits() == pytest.approx(1024)
    assert LEKey.generate(image_size=32, block_size=4, seed=0).key_space_bits() == \
        pytest.approx(_log2fact(96) + 96)
    assert LEKey.generate(image_size=32, block_size=2, channels=1, seed=0).key_space_bits() == \
        pytest.approx(_log2fact(8) + 8)
    assert ELEKey.generate(image_size=32, block_size=4, seed=0).key_space_bits() == \
        pytest.approx(_log2fact(64) + 64 * (_log2fact(96) + 96))
    # lgamma stays accurate for huge n
    assert ELEKey.generate(image_size=64, block_size=8, seed=0).key_space_bits() == \
        pytest.approx(_log2fact(64) + 64 * (_log2fact(384) + 384), rel=1e-12)


# ----------------------------------------------------------------------------- immutability / repr
@pytest.mark.parametrize("cls", ALL)
def test_keys_are_immutable(cls):
    k = gen(cls)
    name = cls._ARRAYS[0]
    arr = getattr(k, name)
    assert not arr.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        arr.reshape(-1)[0] = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(k, name, arr.copy())
    assert hash(k) == hash(gen(cls))


def test_constructor_copies_its_input():
    bp = np.array([1, 0, 3, 2])
    k = BlockScrambleKey(bp, image_size=16, block_size=8, channels=1)
    bp[0] = 3
    assert k.block_perm.tolist() == [1, 0, 3, 2]
    assert k.image_size == (16, 16)


@pytest.mark.parametrize("cls", ALL)
def test_repr_shows_no_array(cls):
    k = gen(cls, image_size=32)
    r = repr(k)
    assert r.startswith(cls.__name__ + "(") and f"scheme={cls.scheme!r}" in r
    assert "image_size=(32, 32)" in r and f"block_size={k.block_size}" in r and k.fingerprint in r
    assert len(r) < 120 and "[" not in r and "array" not in r
    assert str(k) == r


@pytest.mark.parametrize("cls", ALL)
def test_pickle_round_trip_stays_read_only(cls):
    k = gen(cls)
    k2 = pickle.loads(pickle.dumps(k))
    assert k2 == k and type(k2) is cls
    assert all(not a.flags.writeable for a in k2.arrays().values())


def test_replace_revalidates():
    k = LEKey.generate(image_size=32, block_size=4, seed=0)
    k64 = dataclasses.replace(k, image_size=(64, 64))
    assert k64.image_size == (64, 64) and np.array_equal(k64.perm, k.perm)
    with pytest.raises(ValueError, match="not divisible by block size 4"):
        dataclasses.replace(k, image_size=30)


# ----------------------------------------------------------------------------- constructor validation
def test_generate_rejects_size_not_divisible_by_block():
    for cls in (EtCKey, BlockScrambleKey, LEKey, ELEKey):
        with pytest.raises(ValueError, match=r"image size 30x30 is not divisible by block size 8: "
                                             r"expected H and W to be multiples of 8"):
            cls.generate(image_size=30, block_size=8)
    with pytest.raises(ValueError, match="not divisible by block size 16"):
        EtCKey.generate(image_size=(32, 40), block_size=16)


def test_generate_rejects_bad_geometry():
    with pytest.raises(ValueError, match="block_size must be an integer >= 1"):
        EtCKey.generate(image_size=32, block_size=0)
    with pytest.raises(ValueError, match="image_size must be an int or a pair"):
        EtCKey.generate(image_size=(32, 32, 3), block_size=8)
    with pytest.raises(ValueError, match="channels must be an integer >= 1"):
        LEKey.generate(image_size=32, block_size=4, channels=0)
    with pytest.raises(ValueError, match="channels must be 1..6"):
        EtCKey.generate(image_size=32, block_size=4, channels=7)
    with pytest.raises(ValueError, match="PE has no blocks: expected block_size=1"):
        PEKey.generate(image_size=32, block_size=4)


def test_constructors_validate_arrays():
    good = EtCKey.generate(image_size=16, block_size=8, seed=0)
    arrays = {k: v.copy() for k, v in good.arrays().items()}
    geo = dict(image_size=16, block_size=8)

    def etc(**over):
        return EtCKey(**{**arrays, **over}, **geo)

    assert etc() == good
    with pytest.raises(ValueError, match=r"EtCKey.block_perm: not a permutation of 0..3: value \d is missing"):
        etc(block_perm=np.array([0, 1, 1, 2]))
    with pytest.raises(ValueError, match=r"EtCKey.rot_flip: values must lie in 0..7, got 8"):
        etc(rot_flip=np.array([0, 8, 1, 2]))
    with pytest.raises(ValueError, match=r"EtCKey.negpos: values must lie in 0..1, got -1"):
        etc(negpos=np.array([0, -1, 1, 0]))
    with pytest.raises(ValueError, match=r"EtCKey.channel_perm: values must lie in 0..5, got 6"):
        etc(channel_perm=np.array([6, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"EtCKey.rot_flip: expected shape \(4,\) for 16x16 images in 8x8 "
                                         r"blocks with 3 channel\(s\), got shape \(5,\)"):
        etc(rot_flip=np.zeros(5, int))
    with pytest.raises(ValueError, match="EtCKey.negpos: expected an integer array, got dtype float64"):
        etc(negpos=np.zeros(4))
    with pytest.raises(ValueError, match="EtCKey.channel_perm: values must lie in 0..0"):
        EtCKey(**{**arrays, "channel_perm": np.array([1, 0, 0, 0])}, image_size=16, block_size=8, channels=1)
    # booleans are accepted for bit arrays
    assert etc(negpos=arrays["negpos"].astype(bool)) == good


def test_ele_and_pe_constructors_validate():
    k = ELEKey.generate(image_size=8, block_size=4, seed=0)
    perm = k.perm.copy()
    perm[2, :2] = perm[2, 0]
    with pytest.raises(ValueError, match=r"ELEKey.perm \(row 2\): not a permutation of 0..95"):
        ELEKey(k.block_perm, perm, k.invert, image_size=8, block_size=4)
    with pytest.raises(ValueError, match=r"ELEKey.invert: expected shape \(4, 96\)"):
        ELEKey(k.block_perm, k.perm, k.invert[:, :48], image_size=8, block_size=4)
    with pytest.raises(ValueError, match=r"PEKey.negpos: expected shape \(C, H, W\), got shape \(3, 4\)"):
        PEKey(np.zeros((3, 4), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match=r"PEKey.channel_perm: expected shape \(4, 5\)"):
        PEKey(np.zeros((3, 4, 5), int), np.zeros((5, 4), int))


def test_from_reference():
    ref = np.random.default_rng(1).permutation(96)
    k = LEKey.from_reference(ref, image_size=(32, 32))
    rev = ref > 48
    assert rev.sum() == 47  # strict ">" as in the reference: 47 of 96 positions
    assert np.array_equal(k.perm, ref) and np.array_equal(k.invert, (rev[ref] ^ rev).astype(int))
    assert k.block_size == 4 and k.channels == 3
    grey = LEKey.from_reference(np.arange(32), channels=1)
    assert grey.block_size == 4 and not grey.invert.any()
    with pytest.raises(ValueError, match="key length 95 is not 2\\*B\\*B\\*C for C=3"):
        LEKey.from_reference(np.arange(95))
    with pytest.raises(ValueError, match="not a permutation of 0..95"):
        LEKey.from_reference(np.zeros(96, int))
    with pytest.raises(ValueError, match="expected a 1-D permutation"):
        LEKey.from_reference(np.zeros((2, 48), int))


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize("cls", ALL)
def test_save_load_round_trip(cls, tmp_path):
    k = gen(cls, image_size=(8, 16))
    p = tmp_path / "sub" / "key.json"
    k.save(p)
    k2 = keys.load(p)
    assert type(k2) is cls and k2 == k and k2.fingerprint == k.fingerprint
    assert all(not a.flags.writeable for a in k2.arrays().values())
    d = json.loads(p.read_text())
    assert d["format"] == "ppml.key" and d["version"] == 1 and d["scheme"] == cls.scheme
    assert not list(tmp_path.glob("sub/.*.tmp"))  # atomic write left no temp file


@pytest.fixture
def key_file(tmp_path):
    p = tmp_path / "k.json"
    EtCKey.generate(image_size=16, block_size=8, seed=0).save(p)
    return p


def _rewrite(p, fn):
    d = json.loads(p.read_text())
    fn(d)
    p.write_text(json.dumps(d))


def test_load_truncated_and_corrupt(key_file):
    text = key_file.read_text()
    key_file.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated: not valid JSON"):
        keys.load(key_file)
    key_file.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        keys.load(key_file)
    key_file.write_text("")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        keys.load(key_file)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(format="something-else"), "not a ppml key file: expected 'format': 'ppml.key'"),
    (lambda d: d.update(version=2), "unsupported key file version 2: expected 1"),
    (lambda d: d.pop("version"), "unsupported key file version None: expected 1"),
    (lambda d: d.update(scheme="aes"), r"unknown scheme 'aes': expected one of \['block_scramble', 'ele', 'etc'"),
    (lambda d: d.pop("block_size"), r"missing field\(s\) \['block_size'\]"),
    (lambda d: d["arrays"].pop("negpos"), r"etc key arrays: expected \['block_perm', 'rot_flip', 'negpos', "),
    (lambda d: d.update(scheme="le"), r"le key arrays: expected \['perm', 'invert'\]"),
    (lambda d: d["arrays"]["block_perm"].update(data=[0, 1, 1, 2]), "EtCKey.block_perm: not a permutation of 0..3"),
    (lambda d: d["arrays"]["rot_flip"].update(data=[0, 1, 2, 3, 4], shape=[5]),
     r"EtCKey.rot_flip: expected shape \(4,\) for 16x16 images"),
    (lambda d: d["arrays"]["rot_flip"].update(data=[0, 1, 2]), r"expected 4 values for shape \(4,\), got 3"),
    (lambda d: d["arrays"]["rot_flip"].update(data=[0, 1.5, 2, 3]), "expected 'data' to be a flat list of integers"),
    (lambda d: d["arrays"]["negpos"].update(data=[0, 2, 1, 1]), r"EtCKey.negpos: values must lie in 0..1, got 2"),
    (lambda d: d["arrays"]["negpos"].pop("shape"), "array 'negpos': expected an object with 'shape' and 'data'"),
    (lambda d: d.update(block_size=16), r"EtCKey.block_perm: expected shape \(1,\)"),
    (lambda d: d.update(image_size=[30, 30]), "image size 30x30 is not divisible by block size 8"),
    (lambda d: d["arrays"]["block_perm"].update(data=[1, 0, 2, 3]), "checksum mismatch: expected sha256"),
])
def test_load_rejects_foreign_or_damaged_files(key_file, mutate, message):
    _rewrite(key_file, mutate)
    with pytest.raises(ValueError, match=message):
        keys.load(key_file)


def test_load_rejects_non_object(tmp_path):
    p = tmp_path / "k.json"
    p.write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match="expected a JSON object with 'format': 'ppml.key', got list"):
        keys.load(p)


def test_file_without_checksum_loads_and_pe_geometry_is_checked(tmp_path):
    p = tmp_path / "pe.json"
    PEKey.generate(image_size=(4, 6), seed=0).save(p)
    _rewrite(p, lambda d: d.pop("sha256"))
    assert keys.load(p) == PEKey.generate(image_size=(4, 6), seed=0)
    _rewrite(p, lambda d: d.update(image_size=[6, 4]))
    with pytest.raises(ValueError, match=r"disagree with the arrays: expected image_size=\[4, 6\]"):
        keys.load(p)


def test_fingerprint_does_not_reveal_the_key(tmp_path):
    # A plain hash prefix could be searched (this key space has ~31 bits); the fingerprint is
    # salted per key, kept across save/load and pickling, and differs between equal keys made apart.
    import pickle

    from ppml.keys import EtCKey, load

    k = EtCKey.generate(image_size=32, block_size=16, seed=3)
    assert k.fingerprint != k.sha256()[:12]
    twin = EtCKey.generate(image_size=32, block_size=16, seed=3)
    assert twin == k and twin.fingerprint != k.fingerprint
    k.save(tmp_path / "k.json")
    assert load(tmp_path / "k.json").fingerprint == k.fingerprint
    assert pickle.loads(pickle.dumps(k)).fingerprint == k.fingerprint


def test_bad_fingerprint_salt_in_file(tmp_path):
    import json

    from ppml.keys import PEKey, load

    PEKey.generate(image_size=4, seed=0).save(tmp_path / "k.json")
    d = json.loads((tmp_path / "k.json").read_text())
    d["fingerprint_salt"] = "xyz"
    (tmp_path / "k.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="fingerprint_salt' must be 32 hex digits"):
        load(tmp_path / "k.json")


# ----------------------------------------------------------------------------- generate_many
@pytest.mark.parametrize("cls", [BlockScrambleKey, EtCKey])
def test_generate_many_makes_valid_independent_reproducible_keys(cls):
    keys = cls.generate_many(200, image_size=(16, 32), block_size=8, channels=3, seed=5)
    assert len(keys) == 200 and all(type(k) is cls for k in keys)
    # every key survives the full validation of the constructor and of the key file
    for k in keys[:20] + keys[-5:]:
        assert cls(**k.arrays(), image_size=k.image_size, block_size=k.block_size, channels=k.channels) == k
        assert all(not a.flags.writeable for a in k.arrays().values())
    assert load_roundtrip(keys[-1]) == keys[-1]
    assert len({k.sha256() for k in keys}) == 200  # 8! = 40320 block orders: 200 draws all differ here
    assert keys == cls.generate_many(200, image_size=(16, 32), block_size=8, channels=3, seed=5)
    assert keys != cls.generate_many(200, image_size=(16, 32), block_size=8, channels=3, seed=6)
    assert cls.generate_many(2, image_size=32, block_size=8)[0] != cls.generate_many(2, image_size=32, block_size=8)[0]  # OS entropy, 16! orders
    # every block position receives every source block across the keys (uniform permutations)
    perms = np.stack([k.block_perm for k in keys])
    assert all(len(set(perms[:, i])) == 8 for i in range(8))


def load_roundtrip(key):
    import tempfile
    from pathlib import Path
    from ppml.keys import load
    p = Path(tempfile.mkdtemp()) / "k.json"
    key.save(p)
    return load(p)


def test_generate_many_etc_codes_cover_their_ranges():
    keys = EtCKey.generate_many(300, image_size=8, block_size=4, seed=0)
    for field, n in (("rot_flip", 8), ("negpos", 2), ("channel_perm", 6)):
        assert set(np.concatenate([getattr(k, field) for k in keys]).tolist()) == set(range(n)), field


@pytest.mark.parametrize("n", [0, -1, 2.0, True, "3"])
def test_generate_many_rejects_bad_counts(n):
    with pytest.raises(ValueError, match="n \\(the number of keys\\) must be a positive int"):
        EtCKey.generate_many(n, image_size=8, block_size=4)
    with pytest.raises(ValueError, match="n \\(the number of keys\\) must be a positive int"):
        BlockScrambleKey.generate_many(n, image_size=8, block_size=4)


def test_generate_many_checks_geometry():
    with pytest.raises(ValueError, match="image size 30x30 is not divisible by block size 8"):
        BlockScrambleKey.generate_many(3, image_size=30, block_size=8)
    with pytest.raises(ValueError, match="channels must be 1..6"):
        EtCKey.generate_many(3, image_size=8, block_size=4, channels=7)
