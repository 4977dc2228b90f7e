"""Option text parsers (nca3d.errors): comma-separated names and whole numbers."""

import pytest

from nca3d.errors import NCA3DError, listed, whole_numbers


def test_listed_strips_entries_and_drops_empty_ones():
    assert listed(" granite_2d, ,lava_cells_mesh ,") == ["granite_2d", "lava_cells_mesh"]
    assert listed(None) == listed("") == listed(" , ") == []


def test_whole_numbers_parse_a_list_or_name_the_text_and_an_example():
    assert whole_numbers("1, 2,4,", "1,2,4") == [1, 2, 4] and whole_numbers(None, "1") == []
    with pytest.raises(NCA3DError, match=r"^--scales '1,x' is not a comma-separated list of whole numbers, "
                                         r"for example 1,2,4$"):
        whole_numbers("1,x", "1,2,4", "--scales")
