"""Frame labels, central frames and alignment checks on hand-worked TextGrids and CTMs."""

import numpy as np
import pytest

from w2v_jax.data import alignments as A
from w2v_jax.data import labels as L
from w2v_jax.data.errors import DataError
from w2v_jax.models.config import Wav2Vec2Config

CFG = Wav2Vec2Config()
SR = 16000
# 0.3 s = 4800 samples. Conv cascade: 4800 -(k10,s5)-> 959 -> 479 -> 239 -> 119 -> 59 -(k2,s2)-> 29 -> 14.
NUM_SAMPLES, NUM_FRAMES = 4800, 14
# Frame i is centred at (320 i + 200) / 16000 = 0.0125 + 0.02 i s:
#   0:.0125 1:.0325 2:.0525 3:.0725 4:.0925 5:.1125 6:.1325 7:.1525 8:.1725 9:.1925
#   10:.2125 11:.2325 12:.2525 13:.2725
PHONES = [
    A.Interval(0.00, 0.05, "sil"),   # frames 0-1 -> ignore
    A.Interval(0.05, 0.10, "zh"),    # centres .0525 .0725 .0925 -> frames 2-4
    A.Interval(0.10, 0.20, "ong1"),  # frames 5-9
    A.Interval(0.20, 0.23, "sp"),    # frame 10 -> ignore
    A.Interval(0.23, 0.25, "sh"),    # frame 11
    A.Interval(0.25, 0.30, "i3"),    # frames 12-13; i after sh is the apical iii
]
WORDS = [A.Interval(0.0, 0.05, ""), A.Interval(0.05, 0.2, "zhong1"),
         A.Interval(0.2, 0.23, ""), A.Interval(0.23, 0.3, "shi3")]
_ = -1


@pytest.fixture
def textgrid(tmp_path):
    path = tmp_path / "UTT.TextGrid"
    A.write_textgrid(path, {"words": WORDS, "phones": PHONES}, 0.3)
    return path


def _segments(intervals, source="test"):
    return A.phone_segments(intervals, duration=NUM_SAMPLES / SR, frame_seconds=320 / SR, source=source)


def test_frame_labels_hand_worked(textgrid):
    assert CFG.num_frames(NUM_SAMPLES) == NUM_FRAMES
    segments = _segments(A.read_textgrid(textgrid))
    frames = A.frame_labels(segments, "F", NUM_FRAMES, CFG)
    zh, sh = L.INITIALS.index("zh"), L.INITIALS.index("sh")
    ong, iii = L.FINALS.index("ong"), L.FINALS.index("iii")
    assert frames["tone"].tolist() == [_, _, _, _, _, 0, 0, 0, 0, 0, _, _, 2, 2]  # tones 1 and 3
    assert frames["final"].tolist() == [_, _, _, _, _, ong, ong, ong, ong, ong, _, _, iii, iii]
    assert frames["initial"].tolist() == [_, _, zh, zh, zh, _, _, _, _, _, _, sh, _, _]
    assert frames["phone"].tolist() == [_, _, zh, zh, zh, 21 + ong, 21 + ong, 21 + ong, 21 + ong,
                                        21 + ong, _, sh, 21 + iii, 21 + iii]
    assert frames["sex"].tolist() == [_, _, 0, 0, 0, 0, 0, 0, 0, 0, _, 0, 0, 0]


def test_central_frames_hand_worked(textgrid):
    segments = _segments(A.read_textgrid(textgrid))
    table = A.segment_columns(segments, "M", NUM_FRAMES, CFG)
    # midpoints .075 .15 .24 .275 -> (mid*16000 - 200) / 320 = 3.125, 6.875, 11.375, 13.125
    assert table["frame"].tolist() == [3, 7, 11, 13]
    assert table["tone"].tolist() == [_, 0, _, 2]
    assert table["sex"].tolist() == [1, 1, 1, 1]
    np.testing.assert_allclose(table["start"], [0.05, 0.10, 0.23, 0.25], atol=1e-7)


def test_central_frame_ties_and_edges():
    # [0, .125): midpoint .0625 is exactly between frames 2 (.0525) and 3 (.0725): earlier wins.
    # [0, .001): midpoint before frame 0's centre -> 0. A midpoint past the end -> the last frame.
    frames = A.central_frames(np.array([0.0, 0.0, 0.29]), np.array([0.125, 0.001, 0.5]), NUM_FRAMES, CFG)
    assert frames.tolist() == [2, 0, 13]


def test_ctm_matches_textgrid(tmp_path, textgrid):
    ctm = tmp_path / "phones.ctm"
    ctm.write_text("UTT 1 0.05 0.05 zh_B\nUTT 1 0.10 0.10 ong1_E\n"
                   "UTT 1 0.25 0.05 i3_E\nUTT 1 0.23 0.02 sh_B\nOTHER 1 0.0 0.1 a1_S\n")
    by_utt = A.read_ctm(ctm)  # unsorted lines are sorted
    assert sorted(by_utt) == ["OTHER", "UTT"]
    from_ctm = A.frame_labels(_segments(by_utt["UTT"]), "F", NUM_FRAMES, CFG)
    from_grid = A.frame_labels(_segments(A.read_textgrid(textgrid)), "F", NUM_FRAMES, CFG)
    for task in L.TASKS:
        assert from_ctm[task].tolist() == from_grid[task].tolist(), task


def test_interval_past_end_clipped_within_one_frame(caplog):
    segments = _segments(PHONES[:-1] + [A.Interval(0.25, 0.31, "i3")], source="CLIP.TextGrid")
    assert segments[-1].end == pytest.approx(0.3)  # 10 ms past the 0.3 s audio: clipped
    assert "CLIP.TextGrid: clipping interval 'i3'" in caplog.text


def test_interval_past_end_beyond_one_frame_is_error(tmp_path):
    path = tmp_path / "LONG.TextGrid"
    phones = PHONES[:-1] + [A.Interval(0.25, 0.35, "i3")]
    A.write_textgrid(path, {"phones": phones}, 0.35)
    with pytest.raises(DataError, match=r"LONG\.TextGrid.*past the audio's end"):
        _segments(A.read_textgrid(path), source=str(path))


def test_unknown_phone_names_file():
    with pytest.raises(DataError, match=r"UTT\.TextGrid: interval \[0\.1, 0\.2\]: unknown phone 'xx1'"):
        _segments(PHONES[:2] + [A.Interval(0.1, 0.2, "xx1")], source="UTT.TextGrid")


def test_final_without_tone_is_error():
    with pytest.raises(DataError, match="tone digit"):
        _segments([A.Interval(0.1, 0.2, "ong")], source="UTT.TextGrid")


def test_overlapping_intervals(tmp_path):
    with pytest.raises(DataError, match="X.ctm.*overlapping"):
        _segments([A.Interval(0.05, 0.12, "zh"), A.Interval(0.10, 0.2, "ong1")], source="X.ctm")
    path = tmp_path / "OVER.TextGrid"  # praatio refuses it; the error still names the file
    A.write_textgrid(path, {"phones": [A.Interval(0.0, 0.12, "zh"), A.Interval(0.1, 0.3, "ong1")]}, 0.3)
    with pytest.raises(DataError, match=r"OVER\.TextGrid"):
        A.read_textgrid(path)


def test_unsorted_ctm_is_sorted_with_warning(tmp_path):
    ctm = tmp_path / "u.ctm"
    ctm.write_text("U 1 0.10 0.10 ong1\nU 1 0.05 0.05 zh\n")
    assert [iv.label for iv in A.read_ctm(ctm)["U"]] == ["zh", "ong1"]


def test_textgrid_without_phones_tier(tmp_path):
    path = tmp_path / "W.TextGrid"
    A.write_textgrid(path, {"words": WORDS}, 0.3)
    with pytest.raises(DataError, match=r"W\.TextGrid: no 'phones' tier"):
        A.read_textgrid(path)


def test_phone_shorter_than_a_frame_never_takes_a_neighbours_frame():
    # d [0.200, 0.205): midpoint .2025 -> (.2025*16000 - 200)/320 = 9.5 -> frame 9 (ties go
    # earlier), centred at .1925, inside ong1: d owns no frame and gets no row.
    # e5 [0.205, 0.3): midpoint .2525 -> frame 12 (.2525), its own.
    segments = _segments([A.Interval(0.05, 0.10, "zh"), A.Interval(0.10, 0.20, "ong1"),
                          A.Interval(0.20, 0.205, "d"), A.Interval(0.205, 0.30, "e5")])
    table = A.segment_columns(segments, "F", NUM_FRAMES, CFG)
    assert table["frame"].tolist() == [3, 7, 12]
    assert table["initial"].tolist() == [L.INITIALS.index("zh"), _, _]
    np.testing.assert_allclose(table["start"], [0.05, 0.10, 0.205], atol=1e-7)
    frames = A.frame_labels(segments, "F", NUM_FRAMES, CFG)
    for task in L.TASKS:  # every row's label is the one its frame carries
        assert frames[task][table["frame"]].tolist() == table[task].tolist(), task


# The PHONES fixture (zhong1 shi3) as MFA's mandarin_mfa writes it: the final ong is u + ŋ.
IPA_PHONES = [A.Interval(0.00, 0.05, ""), A.Interval(0.05, 0.10, "ʈʂ"), A.Interval(0.10, 0.17, "u˥˥"),
              A.Interval(0.17, 0.20, "ŋ"), A.Interval(0.20, 0.23, ""), A.Interval(0.23, 0.25, "ʂ"),
              A.Interval(0.25, 0.30, "ʐ̩˨˩˦")]


def test_mfa_ipa_textgrid_reads_as_pinyin(tmp_path, textgrid):
    path = tmp_path / "IPA.TextGrid"
    A.write_textgrid(path, {"words": WORDS, "phones": IPA_PHONES}, 0.3)
    from_ipa = _segments(A.read_textgrid(path))
    from_pinyin = _segments(A.read_textgrid(textgrid))
    assert from_ipa == from_pinyin  # same spans (ong = u + ŋ), same labels
    frames = A.frame_labels(from_ipa, "F", NUM_FRAMES, CFG)
    assert frames["tone"].tolist() == [_, _, _, _, _, 0, 0, 0, 0, 0, _, _, 2, 2]


def test_mfa_ipa_ctm_with_digit_tones(tmp_path):
    # 检验 jian3 yan4 and 二 er4, tones as digits: tɕ j e3 n | j e4 n | ʔ o4 ɻ.
    ctm = tmp_path / "ipa.ctm"
    ctm.write_text("U 1 0.00 0.05 tɕ\nU 1 0.05 0.02 j\nU 1 0.07 0.06 e3\nU 1 0.13 0.04 n\n"
                   "U 1 0.17 0.03 j\nU 1 0.20 0.05 e4\nU 1 0.25 0.02 n\n"
                   "U 1 0.27 0.01 ʔ\nU 1 0.28 0.01 o4\nU 1 0.29 0.01 ɻ\n", encoding="utf-8")
    segments = _segments(A.read_ctm(ctm)["U"])
    assert [(s.phone.name, s.phone.tone) for s in segments] == [
        ("j", None), ("ian", "3"), ("ian", "4"), ("er", "4")]
    assert [(s.start, s.end) for s in segments] == [(0.0, 0.05), (0.05, 0.17), (0.17, 0.27), (0.27, 0.30)]


@pytest.mark.parametrize("phones,expected", [
    ("m w o˥˩ ʈʂ u˧˥ k u˥˥ ŋ kʰ a˨˩˦", "m o4 zh u2 g ong1 k a3"),   # 墨竹工卡: mo is w o after m
    ("ʂ ʐ̩˨˩˦ x w ei˥˩ m i˨˩˦ n", "sh iii3 h uei4 m in3"),            # x is IPA [x], pinyin h
    ("x u˧˥ ŋ m au˧˥ l j ou˧˥ l j e˧˥ n", "h ong2 m ao2 l iou2 l ian2"),
    ("s a˥˩ m w o˧˥ w a˨˩˦ ʔ o˨˩˦ ɻ", "s a4 m o2 ua3 er3"),
    ("i˨˩˦ m a˨˩˦ n ei˥˩ l i˥˩", "i3 m a3 n ei4 l i4"),              # n before a vowel: an initial
    ("ʐ ə˧˥ n p u˥˩ kʰ o˨˩˦ m au˥˩", "r en2 b u4 k e3 m ao4"),        # ke is written k o
    ("ʂ w ei˨˩˦ w ə˧˥ n ɕ ɥ e˧˥", "sh uei3 uen2 x üe2"),
    ("j a˧˥ ŋ tɕʰ ɥ e˧˥ n ʂ ʐ̩˥˩", "iang2 q üan2 sh iii4"),
    ("ɕ j aw˨˩˦ m aw˧˥ l y˧˥ f ej˥˩", "x iao3 m ao2 l ü2 f ei4"),     # the aj aw ej ow spellings
    ("m o˧˥ ŋ ts z̩ t ə", "m eng2 z ii5 d e5"),                        # no tone letters: neutral
])
def test_mfa_ipa_syllables(phones, expected):
    from w2v_jax.data import phonesets
    got = phonesets.syllabify(phones.split())
    assert " ".join(p.name + (p.tone or "") for _, _, p in got) == expected


def test_mfa_ipa_unknown_phone_is_named():
    bad = IPA_PHONES[:3] + [A.Interval(0.17, 0.20, "ŋ̍")]
    with pytest.raises(DataError, match=r"U\.TextGrid.*unknown phone 'ŋ̍'"):
        _segments(bad, source="U.TextGrid")
