"""The paper's six age groups: every boundary, vectorised use, bad input."""
import numpy as np
import pytest

from minimtl.data import AGE_GROUP_NAMES, age_group

pytestmark = pytest.mark.data


@pytest.mark.parametrize("age,group", [(0, 0), (15, 0), (16, 1), (25, 1), (26, 2), (35, 2), (36, 3), (45, 3),
                                       (46, 4), (60, 4), (61, 5), (100, 5), (116, 5)])
def test_boundaries(age, group):
    assert age_group(age) == group
    assert isinstance(age_group(age), int)


def test_fractional_ages_past_a_bound_move_up():
    assert age_group(15.0) == 0 and age_group(15.5) == 1 and age_group(60.9) == 5


def test_vectorised_keeps_shape():
    ages = np.array([[3, 20], [30, 40], [50, 70]])
    groups = age_group(ages)
    assert groups.dtype == np.int64 and groups.shape == (3, 2)
    np.testing.assert_array_equal(groups, [[0, 1], [2, 3], [4, 5]])
    assert [age_group(a) for a in range(101)] == age_group(np.arange(101)).tolist()


def test_names_cover_groups():
    assert AGE_GROUP_NAMES == ("0-15", "16-25", "26-35", "36-45", "46-60", "61+")


@pytest.mark.parametrize("bad,error", [(-1, ValueError), (np.nan, ValueError), ("30", TypeError), (True, TypeError)])
def test_bad_input(bad, error):
    with pytest.raises(error):
        age_group(bad)
