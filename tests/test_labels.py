"""Pinyin parsing and the fixed label inventories."""

import pytest

from w2v_jax.data import labels as L
from w2v_jax.data.errors import DataError

# spelling -> (initial, final, tone), one row per standard syllable type.
SYLLABLES = [
    ("ma1", "m", "a", "1"),            # plain initial + final
    ("zhuang4", "zh", "uang", "4"),    # two-letter initial
    ("chi1", "ch", "iii", "1"),        # apical after a retroflex
    ("ri4", "r", "iii", "4"),
    ("zi3", "z", "ii", "3"),           # apical after a dental sibilant
    ("si5", "s", "ii", "5"),
    ("ji2", "j", "i", "2"),            # a j q x i is the real i
    ("er2", "", "er", "2"),            # er
    ("a1", "", "a", "1"),              # zero initial, no y/w
    ("ou3", "", "ou", "3"),
    ("yi1", "", "i", "1"),             # y spellings
    ("ya4", "", "ia", "4"),
    ("yo1", "", "io", "1"),
    ("ye4", "", "ie", "4"),
    ("yao4", "", "iao", "4"),
    ("you3", "", "iou", "3"),
    ("yan2", "", "ian", "2"),
    ("yin1", "", "in", "1"),
    ("yang2", "", "iang", "2"),
    ("ying3", "", "ing", "3"),
    ("yong4", "", "iong", "4"),
    ("yu2", "", "ü", "2"),             # yu is ü
    ("yue4", "", "üe", "4"),
    ("yuan2", "", "üan", "2"),
    ("yun4", "", "ün", "4"),
    ("wu3", "", "u", "3"),             # w spellings
    ("wa1", "", "ua", "1"),
    ("wo3", "", "uo", "3"),
    ("wai4", "", "uai", "4"),
    ("wei4", "", "uei", "4"),
    ("wan3", "", "uan", "3"),
    ("wen4", "", "uen", "4"),
    ("wang2", "", "uang", "2"),
    ("weng1", "", "ueng", "1"),
    ("liu2", "l", "iou", "2"),         # abbreviations iu ui un
    ("gui4", "g", "uei", "4"),
    ("lun2", "l", "uen", "2"),
    ("ju4", "j", "ü", "4"),            # u after j q x is ü
    ("que4", "q", "üe", "4"),
    ("xuan3", "x", "üan", "3"),
    ("jun1", "j", "ün", "1"),
    ("nü3", "n", "ü", "3"),            # ü, v and u: spellings
    ("nv3", "n", "ü", "3"),
    ("lu:e4", "l", "üe", "4"),
    ("lve4", "l", "üe", "4"),
    ("jiong3", "j", "iong", "3"),
    ("de0", "d", "e", "5"),            # 0 is the neutral tone
    ("men", "m", "en", "5"),           # no tone written: neutral
    ("yo", "", "io", "5"),             # yo is the zero-initial io (哟), neutral or toned
    ("yo1", "", "io", "1"),
    ("lo5", "l", "o", "5"),
    ("mā", "m", "a", "1"),             # tone marks
    ("nǚ", "n", "ü", "3"),
    ("hǎo", "h", "ao", "3"),
    ("Shì", "sh", "iii", "4"),
]


@pytest.mark.parametrize("spelling,initial,final,tone", SYLLABLES)
def test_parse_syllable(spelling, initial, final, tone):
    assert L.parse_syllable(spelling) == L.Syllable(initial, final, tone)


@pytest.mark.parametrize("bad", ["ma6", "xyz1", "b1", "hm1", "hm", ""])
def test_parse_syllable_rejects(bad):
    with pytest.raises(DataError):
        L.parse_syllable(bad)


@pytest.mark.parametrize("label,previous,expected", [
    ("zh", "", L.Phone("zh", "initial")),
    ("ong1", "zh", L.Phone("ong", "final", "1")),
    ("i4", "sh", L.Phone("iii", "final", "4")),   # plain i after a retroflex is apical
    ("i4", "c", L.Phone("ii", "final", "4")),
    ("i4", "", L.Phone("i", "final", "4")),
    ("ii3", "z", L.Phone("ii", "final", "3")),    # explicit apical names
    ("iii2", "zh", L.Phone("iii", "final", "2")),
    ("u3", "x", L.Phone("ü", "final", "3")),
    ("v3", "n", L.Phone("ü", "final", "3")),
    ("ui4", "h", L.Phone("uei", "final", "4")),
    ("ER2", "", L.Phone("er", "final", "2")),
])
def test_parse_phone(label, previous, expected):
    assert L.parse_phone(label, previous) == expected


@pytest.mark.parametrize("bad", ["ong", "xx", "q1", "a7"])
def test_parse_phone_rejects_unknown(bad):
    with pytest.raises(DataError, match="phone|tone"):
        L.parse_phone(bad)


def test_inventories_are_fixed():
    # Pinned by hand: changing these changes what saved indices mean.
    assert L.TONES == ("1", "2", "3", "4", "5")
    assert len(L.INITIALS) == 21 and L.INITIALS[:4] == ("b", "p", "m", "f")
    assert len(L.FINALS) == 40 and L.FINALS[0] == "a" and L.FINALS[-2:] == ("ii", "iii")
    assert L.PHONES[21] == "a" and len(L.PHONES) == 61
    assert L.SEXES == ("F", "M") and L.IGNORE == -1
    assert L.TASKS == ("tone", "final", "initial", "phone", "sex")
    assert {"er", "ü", "üe", "üan", "ün", "ê"} <= set(L.FINALS)


def test_check_inventories():
    saved = L.inventories()
    L.check_inventories(saved)
    reordered = dict(saved, tone=["2", "1", "3", "4", "5"])
    with pytest.raises(DataError, match="tone inventory"):
        L.check_inventories(reordered, source="some/dataset")
    with pytest.raises(DataError, match="lack task 'sex'"):
        L.check_inventories({k: v for k, v in saved.items() if k != "sex"})
