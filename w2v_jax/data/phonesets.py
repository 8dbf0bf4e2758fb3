"""MFA's IPA phone set for Mandarin (`mandarin_mfa`, `mandarin_china_mfa`), read as pinyin labels.

MFA's Mandarin dictionaries split a syllable into IPA phones: an initial consonant, then
the final as an optional glottal onset `ʔ` (zero-initial syllables), an optional glide
(`j`, `w`, `ɥ`), a vowel carrying the tone, and an optional coda (`n`, `ŋ`, or `ɻ` in er):

    中国 ʈʂ u˥˥ ŋ k w o˧˥          -> zh ong1, g uo2
    学 ɕ ɥ e˧˥      水 ʂ w ei˨˩˦    -> x üe2, sh uei3
    二 ʔ o˥˩ ɻ      是 ʂ ʐ̩˥˩       -> er4, sh iii4

This module regroups such phones into the pinyin initials and finals of
`labels.INITIALS`/`labels.FINALS` through the two tables below, one row per spelling: an
initial keeps its own interval; a final spans its phones from the onset or glide to the
coda, and its tone is the vowel's. Tones are Chao letters (`˥˥`/`˥` 1, `˧˥` 2, `˨˩˦`/`˨˩`
3, `˥˩` 4) or a digit (0 and 5 neutral); a vowel with neither is neutral (5).

MFA writes pinyin `e` (ke, ge, te) as `o`, `eng` as `o ŋ`, `ong` as `u ŋ`, and bo/po/mo/fo
as `w o`: after b p m f, `w o` is the final `o`, elsewhere `uo`. `n` after a vowel is a
coda unless a vowel follows (then it starts the next syllable): before a glide it is a
coda, as MFA writes zero-initial ya/yan/wo with a bare glide (检验 tɕ j e n j e n);
`ŋ` is always a coda.
An utterance is read in this phone set when one of its labels holds a letter pinyin
never uses (ʰ ʈ ʂ ɕ ʐ ŋ ə ɥ ʔ ɻ, the syllabic mark, a Chao letter) or is a diphthong
spelled aj aw ej ow; `x` is then IPA [x], pinyin h. Syllabic nasals (ŋ̍, m̩) and any other
phone are errors that name the phone.
"""

from __future__ import annotations

import unicodedata
from typing import Sequence

from w2v_jax.data import labels as L
from w2v_jax.data.errors import DataError

IPA_INITIALS = {
    "p": "b", "pʰ": "p", "m": "m", "f": "f", "t": "d", "tʰ": "t", "n": "n", "l": "l",
    "k": "g", "kʰ": "k", "x": "h", "tɕ": "j", "tɕʰ": "q", "ɕ": "x",
    "ʈʂ": "zh", "ʈʂʰ": "ch", "ʂ": "sh", "ʐ": "r", "ts": "z", "tsʰ": "c", "s": "s",
}
# (glide, vowel, coda) -> pinyin final. Diphthong spellings aj aw ej ow are read as ai au ei ou.
IPA_FINALS = {
    ("", "a", ""): "a", ("", "a", "n"): "an", ("", "a", "ŋ"): "ang",
    ("", "ai", ""): "ai", ("", "au", ""): "ao", ("", "ei", ""): "ei", ("", "ou", ""): "ou",
    ("", "o", ""): "e", ("", "ɤ", ""): "e", ("", "ə", ""): "e", ("", "e", ""): "ê",
    ("", "ə", "n"): "en", ("", "o", "ŋ"): "eng", ("", "ə", "ŋ"): "eng",
    ("", "o", "ɻ"): "er", ("", "ə", "ɻ"): "er", ("", "ɚ", ""): "er",
    ("", "u", "ŋ"): "ong", ("", "ʊ", "ŋ"): "ong",
    ("", "i", ""): "i", ("j", "i", ""): "i", ("", "i", "n"): "in", ("j", "i", "n"): "in",
    ("", "i", "ŋ"): "ing", ("j", "i", "ŋ"): "ing",
    ("j", "a", ""): "ia", ("j", "o", ""): "io", ("j", "e", ""): "ie", ("j", "au", ""): "iao",
    ("j", "ou", ""): "iou", ("j", "e", "n"): "ian", ("j", "a", "n"): "ian",
    ("j", "a", "ŋ"): "iang", ("j", "u", "ŋ"): "iong", ("j", "ʊ", "ŋ"): "iong",
    ("", "u", ""): "u", ("w", "u", ""): "u", ("w", "a", ""): "ua", ("w", "o", ""): "uo",
    ("w", "ai", ""): "uai", ("w", "ei", ""): "uei", ("w", "a", "n"): "uan",
    ("w", "ə", "n"): "uen", ("w", "a", "ŋ"): "uang", ("w", "o", "ŋ"): "ueng", ("w", "ə", "ŋ"): "ueng",
    ("", "y", ""): "ü", ("ɥ", "y", ""): "ü", ("ɥ", "e", ""): "üe", ("ɥ", "e", "n"): "üan",
    ("ɥ", "a", "n"): "üan", ("", "y", "n"): "ün", ("ɥ", "y", "n"): "ün",
    ("", "z̩", ""): "ii", ("", "ʐ̩", ""): "iii",
}
CHAO_TONES = {"˥˥": "1", "˥": "1", "˧˥": "2", "˨˩˦": "3", "˨˩": "3", "˥˩": "4"}
_DIPHTHONGS = {"aj": "ai", "aw": "au", "ej": "ei", "ow": "ou"}
VOWELS = frozenset(v for _, v, _ in IPA_FINALS) | frozenset(_DIPHTHONGS)
GLIDES = frozenset({"j", "w", "ɥ"})
_LABIALS = frozenset({"b", "p", "m", "f"})
_CHAO = "˥˦˧˨˩"
_IPA_ONLY = frozenset("ʰʈʂɕʐŋəɥʔɻɚɤʊ\u0329" + _CHAO)


def is_ipa(labels: Sequence[str]) -> bool:
    """Whether an utterance's phone labels are MFA's IPA set (see the module docstring)."""
    return any(set(label) & _IPA_ONLY or label.strip() in _DIPHTHONGS for label in labels)


def split_tone(label: str) -> tuple[str, str | None]:
    """'a˧˥' -> ('a', '2'), 'ei4' -> ('ei', '4'), 'ŋ' -> ('ŋ', None)."""
    label = unicodedata.normalize("NFC", label.strip())
    body = label.rstrip(_CHAO)
    if body != label:
        letters = label[len(body):]
        if letters not in CHAO_TONES:
            raise DataError(f"unknown tone letters {letters!r} in phone {label!r}")
        return body, CHAO_TONES[letters]
    if body[-1:].isdigit():
        if body[-1] not in "012345":
            raise DataError(f"bad tone digit in phone {label!r}")
        return body[:-1], "5" if body[-1] == "0" else body[-1]
    return body, None


def syllabify(labels: Sequence[str], source: str = "") -> list[tuple[int, int, L.Phone]]:
    """Group one run of IPA phones (no silence inside) into pinyin phones.

    Returns (first index, last index, phone) per initial and final; the indices are
    into `labels`, both inclusive, so a caller spans a final from its first phone's
    start to its last phone's end.
    """
    where = f"{source}: " if source else ""
    phones = [split_tone(label) for label in labels]
    out: list[tuple[int, int, L.Phone]] = []
    i, n = 0, len(phones)

    def base(k: int) -> str:
        return phones[k][0] if k < n else ""

    def unknown(k: int) -> DataError:
        return DataError(f"{where}unknown phone {labels[k]!r} (not in the MFA Mandarin phone "
                         f"set read here: w2v_jax.data.phonesets)")

    while i < n:
        initial = ""
        if base(i) in IPA_INITIALS:
            initial = IPA_INITIALS[base(i)]
            out.append((i, i, L.Phone(initial, "initial")))
            i += 1
        first = i
        if base(i) == "ʔ":
            i += 1
        glide = base(i) if base(i) in GLIDES else ""
        i += bool(glide)
        if base(i) not in VOWELS:
            raise unknown(i if i < n else first)
        vowel, tone = _DIPHTHONGS.get(base(i), base(i)), phones[i][1] or "5"
        i += 1
        coda = ""
        if base(i) in ("ŋ", "ɻ") or (base(i) == "n" and base(i + 1) not in VOWELS):
            coda = base(i)
            i += 1
        if (glide, vowel) == ("w", "o") and initial in _LABIALS and not coda:
            final = "o"
        else:
            final = IPA_FINALS.get((glide, vowel, coda))
        if final is None:
            raise DataError(f"{where}phones {list(labels[first:i])!r} form no Mandarin final")
        final = L.normalize_final(final, initial)
        out.append((first, i - 1, L.Phone(final, "final", tone)))
    return out
