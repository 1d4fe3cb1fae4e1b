import sys
import warnings

import pytest

from streamlmu.warn import warn_caller


def test_a_library_warning_names_the_first_line_outside_the_package():
    with pytest.warns(UserWarning, match="outside") as caught:
        line = sys._getframe().f_lineno + 1
        warn_caller("outside")
    assert (caught[0].filename, caught[0].lineno) == (__file__, line)


def test_the_category_is_kept_and_filters_apply():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeWarning, match="slow"):
            warn_caller("slow", RuntimeWarning)
