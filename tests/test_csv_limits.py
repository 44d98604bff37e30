"""CSV datasets of ``physgrad fit`` against hostile files (issue 18 item 4, CSV part): each class
below was a traceback, a hang or a MemoryError before; now it is bad input (exit 2) naming the
file and the line (or column)."""
from __future__ import annotations

import os

import pytest

from physgrad.cli import main
from physgrad.netlists.data import DataError, class_names, read_table

NUMERIC = {"v1": "input", "out": "target"}
ROWS = "".join(f"{k / 10},{k / 20},{k % 3}\n" for k in range(10))


def write(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_a_field_over_the_limit_names_its_line(tmp_path):
    p = write(tmp_path, "v1,out,y\n" + ROWS + f"1,{'9' * 200_000},0\n")
    with pytest.raises(DataError, match=rf"{p}:12: a field longer than 131,072 characters.*max_field_chars"):
        read_table(p, NUMERIC)
    p = write(tmp_path, "v1,out,y\n" + ROWS + f"1,2,{'x' * 5000}\n")
    with pytest.raises(DataError, match=rf"{p}:12: field 3 is longer than 1,000 characters"):
        read_table(p, NUMERIC, max_field_chars=1000)


@pytest.mark.parametrize("label", ["123456789", "9" * 4000])
def test_one_huge_integer_label_is_refused_not_allocated(tmp_path, label):
    p = write(tmp_path, "v1,out,y\n" + ROWS + f"0.5,0.2,{label}\n")
    with pytest.raises(DataError, match=rf"{p}:12: label column 'y': integer label .* would make .* classes.*"
                                        r"limit is 1,000.*max_classes"):
        read_table(p, NUMERIC, "y")
    t = read_table(p, NUMERIC, "y", max_classes=10 ** 9) if len(label) < 10 else None
    if t is not None:
        with pytest.raises(DataError, match="more than 1,000 classes"):
            class_names(t.labels)  # the library guard, for labels from elsewhere


def test_many_distinct_labels_are_refused(tmp_path):
    p = write(tmp_path, "v1,out,y\n" + "".join(f"0.5,0.2,c{k}\n" for k in range(30)))
    assert len(class_names(read_table(p, NUMERIC, "y").labels)) == 30
    with pytest.raises(DataError, match=rf"{p}:22: label column 'y' holds more than 20 distinct labels"):
        read_table(p, NUMERIC, "y", max_classes=20)


def test_row_and_column_limits(tmp_path):
    p = write(tmp_path, "v1,out,y\n" + ROWS)
    assert read_table(p, NUMERIC).n_rows == 10
    with pytest.raises(DataError, match=rf"{p}:7: more than 5 data rows.*max_rows"):
        read_table(p, NUMERIC, max_rows=5)
    with pytest.raises(DataError, match=rf"{p}:1: 3 columns, more than the limit of 2.*max_columns"):
        read_table(p, NUMERIC, max_columns=2)
    wide = write(tmp_path, "v1,out," + ",".join(f"c{k}" for k in range(20_000)) + "\n", "wide.csv")
    with pytest.raises(DataError, match=rf"{wide}:1: 20,002 columns, more than the limit of 10,000"):
        read_table(wide, NUMERIC)
    with pytest.raises(DataError, match=rf"{p}: is larger than the limit of 10 bytes.*max_bytes"):
        read_table(p, NUMERIC, max_bytes=10)


def test_non_utf8_and_nul_bytes_name_the_line(tmp_path):
    data = bytearray(("v1,out,y\n" + ROWS).encode())
    data[data.index(b"0.4")] = 0xFF  # on line 6
    p = write(tmp_path, bytes(data))
    with pytest.raises(DataError, match=rf"{p}:6: not UTF-8 text \(byte 0xff at column 1\)"):
        read_table(p, NUMERIC)
    p = write(tmp_path, "v1,out,y\n" + ROWS.replace("0.3", "0\x003"), "nul.csv")
    with pytest.raises(DataError, match=rf"{p}:5: NUL byte"):
        read_table(p, NUMERIC)


@pytest.mark.parametrize("kind", ["folder", "/dev/zero", "fifo", "loop", "missing"])
def test_special_paths_are_bad_input(tmp_path, kind, capsys):
    path = {"folder": tmp_path / "folder", "/dev/zero": "/dev/zero", "fifo": tmp_path / "fifo",
            "loop": tmp_path / "loop", "missing": tmp_path / "none.csv"}[kind]
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "loop":
        os.symlink("loop", path)
    why = {"folder": "is a directory", "/dev/zero": "not a regular file", "fifo": "not a regular file .*FIFO",
           "loop": "symbolic-link loop", "missing": "no such file"}[kind]
    with pytest.raises(DataError, match=rf"{path}: .*{why}"):
        read_table(path, NUMERIC)
    net = write(tmp_path, "fit\nv1 in 0 1\nr1 in out 1k\nr2 out 0 1k\n", "fit.cir")
    code = main(["fit", str(net), "--data", str(path), "--inputs", "v1", "--outputs", "out", "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err and "Traceback" not in err


def test_limits_api(tmp_path):
    from physgrad.netlists.data import CsvLimits
    from physgrad.types import BadArgumentError

    p = write(tmp_path, "v1,out,y\n" + ROWS)
    assert read_table(p, NUMERIC, limits=CsvLimits(max_rows=10)).n_rows == 10
    with pytest.raises(BadArgumentError, match="unknown CSV limit"):
        read_table(p, NUMERIC, max_row=3)
    with pytest.raises(BadArgumentError, match="max_rows must be an integer >= 1"):
        CsvLimits(max_rows=0)
