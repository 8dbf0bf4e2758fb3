"""Label inventories and the pinyin parser: the only place label indices are defined.

Every inventory is a fixed tuple; a label's index is its position. The tuples are
saved with every dataset (`inventories()`), and `check_inventories` refuses a
dataset whose saved tuples differ, so an index always means the same label.

Spelling choices (documented once, here):
- Finals are toneless pinyin finals written in full: `iou`, `uei`, `uen` (not the
  abbreviated `iu`, `ui`, `un`), `ü`, `üe`, `üan`, `ün` (the u-umlaut written `ü`;
  `v`, `u:` and the `u` after j q x y are normalised to it).
- The two apical ("empty rhyme") vowels are finals of their own: `ii` after z c s
  ([ɿ], as in zi ci si) and `iii` after zh ch sh r ([ʅ], as in zhi chi shi ri).
  An alignment may write either the explicit names or plain `i`; plain `i` after
  one of those initials is mapped to the apical final.
- `er` and `ê` are finals; syllabic nasals (m, n, ng interjections) are not.
- Tone 5 is the neutral tone; a tone digit 0 is read as 5, and a pinyin syllable with
  neither a digit nor a tone mark is neutral (as pinyin writes it: `men`, `de`).
  In a phones tier a final still needs its digit (aligners always write one).
- `yo` is the zero-initial spelling of `io` (哟), like `you` of `iou`.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import Mapping, Sequence

from w2v_jax.data.errors import DataError

IGNORE = -1

TONES: tuple[str, ...] = ("1", "2", "3", "4", "5")
INITIALS: tuple[str, ...] = (
    "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h",
    "j", "q", "x", "zh", "ch", "sh", "r", "z", "c", "s",
)
FINALS: tuple[str, ...] = (
    "a", "o", "e", "ê", "er", "ai", "ei", "ao", "ou", "an", "en", "ang", "eng", "ong",
    "i", "ia", "io", "ie", "iao", "iou", "ian", "in", "iang", "ing", "iong",
    "u", "ua", "uo", "uai", "uei", "uan", "uen", "uang", "ueng",
    "ü", "üe", "üan", "ün",
    "ii", "iii",
)
PHONES: tuple[str, ...] = INITIALS + FINALS
SEXES: tuple[str, ...] = ("F", "M")

TASKS: tuple[str, ...] = ("tone", "final", "initial", "phone", "sex")
TRAINING_TASKS: tuple[str, ...] = ("tone", "final", "sex")
INVENTORIES: Mapping[str, tuple[str, ...]] = {
    "tone": TONES, "final": FINALS, "initial": INITIALS, "phone": PHONES, "sex": SEXES,
}
SILENCE: frozenset[str] = frozenset({"", "sil", "sp", "spn", "<eps>", "sil_b", "sil_e"})

# The paper writes "finals"; the label task, configs/paper.py and the README write "final".
TASK_SPELLINGS = {"finals": "final"}


def task_weights(arg: str) -> dict[str, float]:
    """'tone+sex' -> {'tone': 1.0, 'sex': 1.0}: a config argument's tasks, weighted equally
    as the paper does (multi-task = summed losses)."""
    tasks = [TASK_SPELLINGS.get(t, t) for t in arg.split("+") if t]
    unknown = [t for t in tasks if t not in TASKS]
    if not tasks or unknown:
        raise ValueError(f"tasks {arg!r}: give tasks joined by '+', from {TASKS} "
                         f"(also {', '.join(f'{k!r} for {v!r}' for k, v in TASK_SPELLINGS.items())})")
    return {task: 1.0 for task in tasks}


_APICAL_AFTER = {"z": "ii", "c": "ii", "s": "ii", "zh": "iii", "ch": "iii", "sh": "iii", "r": "iii"}
_PALATALS = frozenset({"j", "q", "x"})
# Abbreviated spellings of finals after a consonant initial.
_ABBREVIATED = {"iu": "iou", "ui": "uei", "un": "uen"}
_TONE_MARKS = {"\u0304": "1", "\u0301": "2", "\u030c": "3", "\u0300": "4"}
_INDEX = {task: {name: i for i, name in enumerate(names)} for task, names in INVENTORIES.items()}


def num_classes(task: str) -> int:
    return len(INVENTORIES[task])


def label_index(task: str, name: str) -> int:
    """Index of `name` in the task's inventory; DataError if it is not there."""
    try:
        return _INDEX[task][name]
    except KeyError:
        raise DataError(f"unknown {task} label {name!r}") from None


def inventories() -> dict[str, list[str]]:
    """The inventories as a JSON-able dict, saved with every dataset."""
    return {task: list(names) for task, names in INVENTORIES.items()}


def check_inventories(saved: Mapping[str, Sequence[str]], source: str = "dataset") -> None:
    """Raise DataError unless `saved` equals this code's inventories exactly."""
    for task, names in INVENTORIES.items():
        if task not in saved:
            raise DataError(f"{source}: saved inventories lack task {task!r}")
        if tuple(saved[task]) != names:
            raise DataError(f"{source}: saved {task} inventory {list(saved[task])} differs from "
                            f"the code's {list(names)}; labels would change meaning")


@dataclasses.dataclass(frozen=True)
class Syllable:
    initial: str  # "" for a zero-initial syllable
    final: str
    tone: str


def _split_tone(spelling: str) -> tuple[str, str | None]:
    """Strip a trailing tone digit or a tone mark; tone None when neither is present."""
    if spelling and spelling[-1].isdigit():
        digit = spelling[-1]
        if digit not in "012345":
            raise DataError(f"bad tone digit in {spelling!r}")
        return spelling[:-1], "5" if digit == "0" else digit
    decomposed = unicodedata.normalize("NFD", spelling)
    tone = None
    for mark, digit in _TONE_MARKS.items():
        if mark in decomposed:
            tone = digit
            decomposed = decomposed.replace(mark, "")
    return unicodedata.normalize("NFC", decomposed), tone


def _normalise_umlaut(spelling: str) -> str:
    return spelling.replace("u:", "ü").replace("v", "ü")


def normalize_final(spelling: str, initial: str = "") -> str:
    """Canonical toneless final for `spelling` after `initial` ("" for none).

    Handles `v`/`u:` for ü, `u` after j q x meaning ü, the abbreviations iu/ui/un,
    `ue` (always üe), and plain `i` after z c s / zh ch sh r (the apical finals).
    """
    final = _normalise_umlaut(spelling)
    if initial in _PALATALS and final.startswith("u"):
        final = "ü" + final[1:]
    final = _ABBREVIATED.get(final, final)
    if final == "ue":
        final = "üe"
    if final == "i" and initial in _APICAL_AFTER:
        final = _APICAL_AFTER[initial]
    if final not in _INDEX["final"]:
        raise DataError(f"unknown final {spelling!r}" + (f" after {initial!r}" if initial else ""))
    return final


def _zero_initial_final(body: str) -> str:
    """Final of a syllable spelled with y or w (yi -> i, you -> iou, wu -> u, yu -> ü ...)."""
    head, rest = body[0], body[1:]
    if head == "y":
        if rest.startswith(("u", "ü")):
            return "ü" + rest[1:]
        return rest if rest.startswith("i") else "i" + rest
    return rest if rest.startswith("u") else "u" + rest  # head == "w"


def parse_syllable(spelling: str) -> Syllable:
    """Split a pinyin syllable (tone digit, tone mark, or neither: neutral) into initial,
    final and tone.

    >>> parse_syllable("zhuang4")
    Syllable(initial='zh', final='uang', tone='4')
    """
    body, tone = _split_tone(spelling.strip().lower())
    tone = tone or "5"
    body = _normalise_umlaut(body)
    if not re.fullmatch(r"[a-zêü]+", body or "?"):
        raise DataError(f"not a pinyin syllable: {spelling!r}")
    if body[0] in "yw":
        final = _zero_initial_final(body)
        if final not in _INDEX["final"]:
            raise DataError(f"unknown syllable {spelling!r}")
        return Syllable("", final, tone)
    initial = body[:2] if body[:2] in _INDEX["initial"] else body[0]
    if initial not in _INDEX["initial"]:
        initial = ""
    if initial == body:
        raise DataError(f"syllable {spelling!r} has no final")
    try:
        final = normalize_final(body[len(initial):], initial)
    except DataError:
        raise DataError(f"unknown syllable {spelling!r}") from None
    return Syllable(initial, final, tone)


@dataclasses.dataclass(frozen=True)
class Phone:
    """One non-silent label of a phones tier: an initial (tone None) or a toned final."""
    name: str
    kind: str  # "initial" or "final"
    tone: str | None = None


def parse_phone(label: str, previous_initial: str = "") -> Phone:
    """Read a phones-tier label such as `zh`, `ong1`, `i4`, `v3`, `ii1` (not silence).

    `previous_initial` is the initial just before, within the same word, which decides
    ü after j q x and the apical reading of `i`. A final must carry its tone digit.
    """
    label = label.strip().lower()
    if label in _INDEX["initial"]:
        return Phone(label, "initial")
    body, tone = _split_tone(label)
    if tone is None:
        raise DataError(f"unknown phone {label!r} (a final needs a tone digit)")
    try:
        return Phone(normalize_final(body, previous_initial), "final", tone)
    except DataError:
        raise DataError(f"unknown phone {label!r}") from None


def is_silence(label: str) -> bool:
    return label.strip().lower() in SILENCE
