"""Device files (JSON/TOML) a user may get wrong: every bad input class is a PhysgradError (exit 2
at the command line) naming the file and the key or line, never a traceback, a hang or a huge read."""
import os

import pytest

from physgrad.cli import main
from physgrad.devices import device_from_spec, load_device
from physgrad.devices.presets import MAX_FILE_BYTES
from physgrad.types import PhysgradError

BAD = [  # (file name, content, what the message must say besides the file name)
    ("top.json", "[1, 2]", "a device model is a table of pieces, got list"),
    ("name.json", '{"name": [1]}', "name must be a string"),
    ("longname.json", '{"name": "' + "x" * 1000 + '"}', "name must be a string of 1 to 200 characters"),
    ("base.json", '{"base": ["reram-sb"]}', "base must be a string"),
    ("basename.toml", 'base = "memristor"', "base: unknown device model 'memristor'"),
    ("lawkind.json", '{"bounds": {}, "pulses": {"dw_min": 0.1, "law": {"kind": [1]}}}', "pulses.law must be one of"),
    ("lawlist.json", '{"bounds": {}, "pulses": {"dw_min": 0.1, "law": ["exp"]}}', "pulses.law must be one of"),
    ("gmin_list.json", '{"bounds": {"g_min": [0.1]}}', r"bounds: Bounds.g_min must be a number"),
    ("gmin_str.toml", 'bounds = {g_min = "0.1"}', r"bounds: Bounds.g_min must be a number"),
    ("gmax_date.toml", "[bounds]\ng_max = 1979-05-27\n", r"bounds: Bounds.g_max must be a number"),
    ("gmax_table.json", '{"bounds": {"g_max": {"v": 1}}}', r"bounds: Bounds.g_max must be a number"),
    ("gmax_nan.json", '{"bounds": {"g_max": NaN}}', r"Bounds.g_max must be a number in \(0, inf\), got nan"),
    ("gmax_400_digits.json", '{"bounds": {"g_max": ' + "9" * 400 + "}}", r"Bounds.g_max must be a number.*characters\)"),
    ("gmax_5000_digits.json", '{"bounds": {"g_max": ' + "9" * 5000 + "}}", "digits"),
    ("refresh_str.json", '{"bounds": {}, "pair": {"refresh_every": "ten"}}', "refresh_every must be an integer"),
    ("refresh_inf.json", '{"bounds": {}, "pair": {"refresh_every": 1e999}}', "refresh_every must be an integer"),
    ("refresh_list.toml", "[bounds]\n[pair]\nrefresh_every = [100]\n", "refresh_every must be an integer"),
    ("resample.json", '{"read_noise": {"sigma": 0.1, "resample": ["phase"]}}', "ReadNoise.resample must be one of"),
    ("stuck_at.json", '{"bounds": {}, "stuck": {"fraction": 0.1, "at": {"x": 1}}}', "Stuck.at must be one of"),
    ("relative.json", '{"bounds": {"relative": "yes"}}', "Bounds.relative must be true or false"),
    ("table.toml", "bounds = 3", "bounds must be a table of parameters, got 3"),
    ("dup.json", '{"bounds": {}, "bounds": {"g_max": 1}}', r"duplicate key\(s\) \['bounds'\]"),
    ("dup.toml", "[bounds]\ng_max = 1\n[bounds]\ng_max = 2\n", "(?i)declare|defined|exist"),
    ("syntax.json", '{"bounds": {\n"g_max": }}', r":2: Expecting value"),
    ("deep.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("deep.toml", "a = " + "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("latin1.toml", b'name = "caf\xe9"\n', r":1: not UTF-8 text \(byte 11"),
    ("huge.json", "{" + " " * (MAX_FILE_BYTES + 10) + "}", "a device model file is at most 1048576 bytes"),
]


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


@pytest.mark.parametrize("name,content,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_device_files_name_the_file_and_key(tmp_path, name, content, needle):
    path = write(tmp_path, name, content)
    with pytest.raises(PhysgradError, match=needle) as err:
        device_from_spec(path)
    assert str(err.value).startswith(path)
    assert len(str(err.value)) < 600  # values from the file are cut short in messages


def test_special_files_are_refused_without_reading_them(tmp_path):
    (tmp_path / "dir.json").mkdir()
    os.symlink("/dev/zero", tmp_path / "zero.json")
    os.mkfifo(tmp_path / "fifo.toml")  # opening a FIFO for reading would block
    for name in ("dir.json", "zero.json", "fifo.toml"):
        with pytest.raises(PhysgradError, match=f"cannot read device model .*{name}: not a regular file"):
            device_from_spec(str(tmp_path / name))
    with pytest.raises(PhysgradError, match="No such file"):
        load_device(tmp_path / "missing.toml")
    with pytest.raises(PhysgradError, match=r"ends in \.json or \.toml"):
        load_device("/dev/zero")


@pytest.mark.parametrize("name,content,needle", [BAD[7], BAD[12], BAD[26], BAD[24]], ids=lambda v: str(v)[:12])
def test_bad_device_files_exit_2_from_train(tmp_path, capsys, data_dir, name, content, needle):
    path = write(tmp_path, name, content)
    out = tmp_path / "run"
    code = main(["train", "--preset", "drn-xs", "--data-dir", data_dir, "--epochs", "1", "--train-size", "8",
                 "--out", str(out), "--no-progress", "--device-model", path])
    assert code == 2
    err = capsys.readouterr().err
    assert path in err and "Traceback" not in err
    assert not out.exists()
