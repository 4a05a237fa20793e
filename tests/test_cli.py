import subprocess
import sys

import pytest

from paperkit import cli, reproduce


def test_help_lists_verbs():
    out = subprocess.run([sys.executable, "-m", "paperkit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for verb in ("data", "profile", "bench", "predict", "reproduce"):
        assert verb in out.stdout


def test_reproduce_rejects_unknown_notebook_and_parameter(tmp_path, capsys):
    assert cli.main(["reproduce", "--profile", "smoke", "--run-dir", str(tmp_path), "--only", "99"]) == 1
    assert "no such notebook" in capsys.readouterr().err
    assert cli.main(["reproduce", "--profile", "smoke", "--run-dir", str(tmp_path), "--only", "00",
                     "--param", "learning_rat=3"]) == 1
    assert "declared by none" in capsys.readouterr().err


def test_notebook_without_parameters_cell_is_refused(tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "00_x.ipynb")
    with pytest.raises(reproduce.ReproduceError, match="no cell tagged 'parameters'"):
        reproduce.check_parameters(tmp_path / "00_x.ipynb", {"profile": "smoke"})


@pytest.mark.parametrize("sub", ["", "sub"])
def test_reproduce_run_dir_that_is_a_file_is_a_one_line_error(tmp_path, capsys, sub):
    f = tmp_path / "results.txt"
    f.write_text("not a folder")
    run_dir = f / sub if sub else f
    assert cli.main(["reproduce", "--profile", "smoke", "--run-dir", str(run_dir), "--only", "00"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("paperkit reproduce: --run-dir ")
    assert str(f) in err and "Traceback" not in err and "NotADirectoryError" not in err
    assert f.read_text() == "not a folder"
