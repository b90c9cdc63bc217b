"""Hostile and unusual input (issue 19): every one is a one-line error with exit 2 (or 1 for
`check`'s findings), never exit 70, a hang, a traceback or a file left behind."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from conftest import MODELS, P3
from plan_helpers import GPT_PLAN

from cli import exit_codes
from cli.main import main
from plans import limits

MLP_TINY = MODELS / "mlp-tiny.onnx"
# Plans mlp-tiny in a fraction of a second.
QUICK = ["--hosts", "1", "--batch-size", "8", "--jobs", "1"]


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit code and stderr of the CLI run in this process."""
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return code, err


def one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, err = run_main(capsys, *args)
    assert code == exit_codes.BAD_INPUT, err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def _cluster(tmp_path: Path, text: str, name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the table, row by row -----------------------------------------------------------


def test_an_alias_expansion_is_refused_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
    text += "name: *i\n" + P3.read_text().replace("name: aws-p3.16xlarge", "")
    assert len(text.split("\n# AWS")[0]) < 1024
    cluster = _cluster(tmp_path, text)
    err = one_line_error(capsys, str(MLP_TINY), str(cluster), *QUICK, "-o", str(tmp_path / "p"))
    assert "expected no YAML aliases or anchors" in err and "the anchor &a on line 1" in err


def test_a_lone_alias_is_refused_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = _cluster(tmp_path, P3.read_text().replace("name: aws-p3.16xlarge", "name: *x"))
    err = one_line_error(capsys, str(MLP_TINY), str(cluster), *QUICK, "-o", str(tmp_path / "p"))
    assert "found the alias *x on line" in err


def test_a_hundred_million_hosts_is_refused_before_anything_is_allocated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = _cluster(tmp_path, P3.read_text().replace("hosts: 4 ", "hosts: 100000000 "))
    args = [str(MLP_TINY), str(cluster), "--batch-size", "8", "-o", str(tmp_path / "p")]
    err = one_line_error(capsys, *args)
    assert err == f"error: {cluster}: hosts: expected at most 65536, found 100000000"


@pytest.mark.parametrize("command", ["show", "check", "diff"])
def test_a_plan_nested_a_hundred_thousand_levels_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    args = [command, str(deep)] + ([str(GPT_PLAN)] if command == "diff" else [])
    err = one_line_error(capsys, *args)
    assert f"{deep}: expected JSON nested at most {limits.MAX_JSON_DEPTH} deep" in err


def test_an_output_in_a_missing_folder_is_refused_before_planning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "no" / "such" / "dir" / "plan.json"
    err = one_line_error(capsys, str(MLP_TINY), str(P3), *QUICK, "-o", str(out))
    assert f"{out}: expected a path in an existing folder, found no folder" in err
    assert list(tmp_path.iterdir()) == []


def test_microbatches_that_do_not_divide_the_batch_are_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    args = [str(MLP_TINY), str(P3), "--hosts", "1", "--batch-size", "7", "--microbatches", "3"]
    err = one_line_error(capsys, *args, "--jobs", "1", "-o", str(out))
    assert "--microbatches: expected a divisor of the batch size 7" in err and "found 3" in err
    assert not out.exists()


# --- counts and their bounds -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "100000000"], "--batch-size: expected at most 1048576, found 100000000"),
        (["--batch-size", "0"], "--batch-size: expected a positive integer, found 0"),
        (["--hosts", "70000"], "--hosts: expected at most 65536, found 70000"),
        (["--microbatches", "1000000"], "--microbatches: expected at most 65536, found 1000000"),
        (["--jobs", "100000"], "--jobs: expected at most 1024, found 100000"),
        (["--layers", "10000000"], "--layers: expected at most 65536, found 10000000"),
        (["--dim", "seq=99999999999999999999999"], "--dim seq: expected at most 16777216"),
        (["--dim", "seq=²"], "--dim: expected NAME=VALUE with a positive integer VALUE"),
    ],
)  # fmt: skip
def test_every_count_flag_has_an_upper_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    args = [str(MLP_TINY), str(P3), "--hosts", "1", "--batch-size", "8", "--jobs", "1", *flags]
    err = one_line_error(capsys, *args, "-o", str(tmp_path / "plan.json"))
    assert message in err
    assert not (tmp_path / "plan.json").exists()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("gpus_per_host: 8 ", "gpus_per_host: 5000 ", "gpus_per_host: expected at most 1024, found 5000"),
        ("gpus_per_host: 8 ", "gpus_per_host: 1024 \nhosts: 2000 ", "hosts: expected at most 1024 hosts of 1024 GPUs (at most 1048576 GPUs in all), found 2000"),
        ("hosts: 4 ", "hosts: " + "9" * 5000 + " ", "expected valid YAML values"),
        ("memory: 16 GiB", "memory: " + "[" * 20 + "1" + "]" * 20, "expected mappings and lists nested at most 16 deep"),
        ("hosts: 4 ", "hosts: 2025-13-01 ", "expected valid YAML values, found month must be in 1..12"),
    ],
)  # fmt: skip
def test_cluster_counts_values_and_nesting_are_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, message: str
) -> None:
    text = P3.read_text().replace(old, new)
    if "hosts: 2000" in new:
        text = text.replace("hosts: 4 ", "", 1)
    cluster = _cluster(tmp_path, text)
    args = [str(MLP_TINY), str(cluster), "--batch-size", "8", "--jobs", "1"]
    err = one_line_error(capsys, *args, "-o", str(tmp_path / "p"))
    assert message in err


def test_a_large_cluster_file_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = _cluster(tmp_path, P3.read_text() + "#" * limits.MAX_YAML_BYTES + "\n")
    err = one_line_error(capsys, str(MLP_TINY), str(cluster), *QUICK, "-o", str(tmp_path / "p"))
    assert f"expected a YAML file of at most {limits.MAX_YAML_BYTES} bytes" in err


def test_hosts_at_the_bound_times_gpus_past_the_total_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = _cluster(
        tmp_path, P3.read_text().replace("gpus_per_host: 8 ", "gpus_per_host: 1024 ")
    )
    args = [str(MLP_TINY), str(cluster), "--hosts", "2000", "--batch-size", "8"]
    err = one_line_error(capsys, *args, "-o", str(tmp_path / "p"))
    assert "--hosts: expected at most 1024 hosts of 1024 GPUs (at most 1048576 GPUs in all)" in err


# --- plan files ----------------------------------------------------------------------------------


def _plan_document() -> dict[str, object]:
    document: dict[str, object] = json.loads(GPT_PLAN.read_text())
    return document


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"schema": NaN}', "expected finite numbers, found NaN"),
        ('{"schema": 1e999}', "expected finite numbers, found 1e999"),
        ('{"schema": ' + "9" * 30 + "}", "expected integers of at most 64 bits"),
        ('{"schema": ' + "9" * 5000 + "}", "expected integers of at most 64 bits"),
        ('{"a": "' + "[" * 1000 + '"}', "schema: expected"),  # brackets in a string are text
        ("\xff\xfe", "expected a UTF-8 plan file, found a non-UTF-8 byte at offset 0"),
    ],
)
def test_plan_numbers_and_bytes_that_no_plan_holds_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    assert message in one_line_error(capsys, "show", str(path))


def test_a_large_plan_file_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_PLAN_BYTES", 1000)
    for command in ("show", "check"):
        err = one_line_error(capsys, command, str(GPT_PLAN))
        assert "expected a plan file of at most 1000 bytes, found a larger file" in err


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("microbatches", 10**9, "settings.microbatches: expected at most 65536, found 1000000000"),
        ("batch_size", 10**9, "settings.batch_size: expected at most 1048576"),
        ("warmup_extra", 10**9, "settings.warmup_extra: expected at most 65536"),
    ],
)
def test_plan_counts_are_bounded_before_the_timeline_is_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: int, message: str
) -> None:
    document = _plan_document()
    document["settings"][field] = value  # type: ignore[index]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(document))
    assert message in one_line_error(capsys, "show", str(path))


# --- output files ----------------------------------------------------------------------------------


def test_an_output_that_is_a_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(capsys, str(MLP_TINY), str(P3), *QUICK, "-o", str(tmp_path))
    assert code == exit_codes.BAD_INPUT  # click's usage error: the usage, then the reason
    assert f"File '{tmp_path}' is a directory" in err
    assert list(tmp_path.iterdir()) == []


def test_an_output_beside_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "plan.json"
    err = one_line_error(capsys, str(MLP_TINY), str(P3), *QUICK, "-o", str(out))
    assert f"{out}: expected a path in an existing folder" in err


def test_an_unwritable_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != tmp_path and real_access(p, mode))
    out = tmp_path / "plan.json"
    err = one_line_error(capsys, str(MLP_TINY), str(P3), *QUICK, "-o", str(out))
    assert f"{out}: expected a path in a writable folder" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_full_disk_is_bad_input_and_leaves_no_temporary_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
) -> None:
    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(f"plans.io.os.{failing}", no_space)
    out = tmp_path / "plan.json"
    err = one_line_error(capsys, str(MLP_TINY), str(P3), *QUICK, "-o", str(out))
    assert (
        err == f"error: {out}: expected a file that can be written, found No space left on device"
    )
    assert list(tmp_path.iterdir()) == []


def test_compare_refuses_a_plans_folder_under_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    folder = tmp_path / "file" / "plans"
    args = ["compare", str(MLP_TINY), str(P3), *QUICK, "--write-plans", str(folder)]
    assert "a folder for the plans" in one_line_error(capsys, *args)
