import pytest

from fcnseg.atomic import atomic_write


@pytest.mark.parametrize("name", ["a" * 255, "é" * 125 + ".json"])
def test_a_name_at_the_length_limit_is_written_without_a_temp_left(tmp_path, name):
    """The temp file beside a 255-byte name would be longer than any file name may be."""
    path = tmp_path / name
    atomic_write(path, lambda f: f.write(b"kept"))
    assert path.read_bytes() == b"kept"
    assert [p.name for p in tmp_path.iterdir()] == [name]
