"""``biqabench datasets list`` / ``datasets check``."""

from __future__ import annotations

import io

from PIL import Image
from typer.testing import CliRunner

from biqabench.cli import app, main

runner = CliRunner()


def test_datasets_list_shows_every_reader_with_its_layout():
    out = runner.invoke(app, ["datasets", "list", "--format", "plain"]).output
    for name, layout_bit in [("clive", "AllImages_release.mat"), ("koniq10k", "koniq10k_distributions_sets.csv"),
                             ("spaq", "TestImage"), ("bid", "DatabaseGrades.xlsx"), ("flive", "labels_image.csv"),
                             ("kadid10k", "dmos.csv"), ("tid2013", "mos_with_names.txt"), ("live", "dmos.mat"),
                             ("csiq", "csiq_label.txt"), ("pyiqa", "meta_info"), ("csv", "labels.csv"),
                             ("demo-a", "embedded"), ("demo-b", "embedded")]:
        line = next(ln for ln in out.splitlines() if ln.split() and ln.split()[0] == name)
        assert layout_bit in line, name


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_check_reports_counts_range_and_problems(tmp_path):
    (tmp_path / "labels.csv").write_text("image,mos\na.jpg,12\nb.jpg,80\nc.jpg,40\nd.jpg,oops\n")
    (tmp_path / "a.jpg").write_bytes(_jpeg())
    (tmp_path / "b.jpg").write_bytes(_jpeg())
    (tmp_path / "d.jpg").write_bytes(_jpeg())
    res = runner.invoke(app, ["datasets", "check", "csv", "--root", str(tmp_path), "-o", "scale=0,100"])
    assert res.exit_code == 1
    out = res.output
    fields = {}
    for line in out.splitlines():
        key, _, value = line.partition("  ")
        fields[key.strip()] = value.strip()
    assert fields["entries"] == "4" and fields["usable"] == "2"
    assert fields["missing"] == "1" and fields["bad mos"] == "1"
    assert fields["mos min"] == "12" and fields["mos max"] == "80"
    assert "'c.jpg'" in fields["problems"] and "row 4 'd.jpg'" in fields["problems"]


def test_check_clean_demo_set_exits_zero():
    res = runner.invoke(app, ["datasets", "check", "demo-a"])
    assert res.exit_code == 0, res.output
    from biqabench.data import load_dataset

    assert str(len(load_dataset("demo-a"))) in res.output and "contents" in res.output


def test_check_bad_option_is_a_one_line_error(tmp_path, capsys):
    try:
        main(["datasets", "check", "csv", "--root", str(tmp_path), "-o", "scale"])
    except SystemExit as exc:
        assert exc.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: option 'scale' must look like key=value")
