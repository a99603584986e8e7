"""CompareConfig's bootstrap settings: the reference lines' resample count and its validation."""

import pytest

from universality import UniversalityError
from universality.jobs.config import CompareConfig


def test_reference_resamples_default_to_a_third_of_the_pair_resamples():
    assert CompareConfig(models=["a", "b"], n_boot=30).ref_boot == 10
    assert CompareConfig(models=["a", "b"], n_boot=9).ref_boot == 5  # never fewer than 5 while bootstrapping
    assert CompareConfig(models=["a", "b"], n_boot=0).ref_boot == 0  # no bootstrap at all
    assert CompareConfig(models=["a", "b"], n_boot=30, n_boot_refs=30).ref_boot == 30


def test_negative_reference_resamples_are_refused():
    with pytest.raises(UniversalityError, match="n_boot_refs"):
        CompareConfig(models=["a", "b"], n_boot_refs=-1)
