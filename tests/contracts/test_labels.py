import pytest

from mpox_aism.contracts.labels import LABELS, NUM_CLASSES, label_index


def test_fixed_order():
    assert LABELS == ("mpox", "chickenpox", "measles", "bullous", "eczema", "urticaria", "vasculitis", "normal")
    assert NUM_CLASSES == 8
    assert [label_index(n) for n in LABELS] == list(range(8))


def test_unknown_label_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown class 'monkeypox'"):
        label_index("monkeypox")
