"""Fuzzing every command with mutated inputs (issue 19): a valid cluster YAML, a small plan the
tool wrote and a small ONNX model, with fields deleted, duplicated and retyped, huge and
negative numbers, wrong units, unicode and deep nesting. Whatever comes in, the exit code is
0, 1, 2 or 3, stderr has no traceback, and a run that fails leaves no file behind.

Derandomized (tests/conftest.py) and bounded in count, in this process for speed; one test runs
the CLI in a child process under an address-space limit.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import MODELS, P3, ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plan_helpers import CASES

from cli.main import main

MLP_TINY = MODELS / "mlp-tiny.onnx"
MLP_PLAN = CASES / "mlp-tiny-p3" / "expected.plan.json"
QUICK = ["--hosts", "1", "--batch-size", "8", "--jobs", "1", "--ilp-time-limit", "5"]
EXITS = {0, 1, 2, 3}
EIGHT_WAY_DATA_PARALLEL = ["--dp", "8", "--tp", "1", "--pp", "1", "--microbatch", "1"]
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Values a mutation puts in place of a field's own.
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**31, 2**63 - 1, 10**12, 1e308, -1e-308, 0.5]),
    st.sampled_from(["", "16 GiB", "16 furlongs", "-5 GB/s", "1e400 B", "nan", "ℌ𝔬𝔰𝔱", "\u202e8"]),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside nested dicts and lists."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """`document` with one to three fields deleted, duplicated under another key, retyped,
    or nested deep."""
    document = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(document)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = draw(st.sampled_from(["delete", "duplicate", "retype", "nest"]))
        if action == "delete":
            del parent[key]
        elif action == "duplicate" and isinstance(parent, dict):
            parent[f"{key}_copy"] = parent[key]
        elif action == "duplicate":
            parent.append(parent[key])
        elif action == "retype":
            parent[key] = draw(ODD_VALUES)
        else:
            parent[key] = _nested(draw(st.sampled_from([5, 40, 200])))
    return document


def _run(capsys: pytest.CaptureFixture[str], args: list[str], out: Path) -> int:
    code = main(args)
    captured = capsys.readouterr()
    assert code in EXITS, captured.err
    assert "Traceback" not in captured.err and "internal error" not in captured.err, captured.err
    if code != 0:
        assert not out.exists() or out.is_dir()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers
    return code


CLUSTER_DOCUMENT = yaml.safe_load(P3.read_text())


def _cluster_file(tmp_path: Path, document: Any) -> Path:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(document, allow_unicode=True))
    return cluster


@FUZZ
@given(document=mutated(CLUSTER_DOCUMENT))
def test_mutated_cluster_yaml_through_plan_evaluate_and_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: Any
) -> None:
    cluster = _cluster_file(tmp_path, document)
    out = tmp_path / "plan.json"
    out.unlink(missing_ok=True)
    _run(capsys, [str(MLP_TINY), str(cluster), *QUICK, "--intra-only", "-o", str(out)], out)
    out.unlink(missing_ok=True)
    evaluate = ["evaluate", str(MLP_TINY), str(cluster), *QUICK, *EIGHT_WAY_DATA_PARALLEL]
    _run(capsys, [*evaluate, "-o", str(out)], out)
    plan_file = tmp_path / "given.plan.json"
    plan_file.write_text(MLP_PLAN.read_text())
    _run(capsys, ["check", str(plan_file), "--cluster", str(cluster)], tmp_path / "none.json")


@settings(FUZZ, max_examples=12)
@given(document=mutated(CLUSTER_DOCUMENT))
def test_mutated_cluster_yaml_through_compare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: Any
) -> None:
    # Fewer examples: compare plans the auto search and every baseline (about 1 s a run).
    cluster = _cluster_file(tmp_path, document)
    plans = tmp_path / "plans"
    shutil.rmtree(plans, ignore_errors=True)  # one tmp_path serves every example
    args = ["compare", str(MLP_TINY), str(cluster), *QUICK, "--write-plans", str(plans)]
    if _run(capsys, args, tmp_path / "none.json") != 0:
        assert not plans.exists() or not list(plans.iterdir())


# Flag values: in range, zero, negative, past any cluster, past 64 bits.
COUNTS = st.one_of(
    st.sampled_from([1, 2, 4, 8]), st.integers(-3, 0), st.sampled_from([3, 7, 10**6, 2**70])
)


@FUZZ
@given(
    dp=COUNTS, tp=COUNTS, pp=COUNTS, vp=COUNTS, microbatch=COUNTS,
    recompute=st.sampled_from(["none", "full"]), zero=st.sampled_from(["0", "1", "2", "3"]),
    schedule=st.sampled_from(["1f1b", "gpipe"]),
)  # fmt: skip
def test_evaluate_flags_never_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
    dp: int, tp: int, pp: int, vp: int, microbatch: int, recompute: str, zero: str, schedule: str,
) -> None:  # fmt: skip
    out = tmp_path / "plan.json"
    out.unlink(missing_ok=True)
    flags = ["--dp", str(dp), "--tp", str(tp), "--pp", str(pp), "--vp", str(vp)]
    flags += ["--microbatch", str(microbatch), "--recompute", recompute, "--zero", zero]
    args = ["evaluate", str(MLP_TINY), str(P3), *QUICK, *flags, "--schedule", schedule]
    _run(capsys, [*args, "-o", str(out)], out)


@FUZZ
@given(text=st.text(max_size=300))
def test_arbitrary_text_as_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(P3.read_text()[: len(text) % 1500] + text, encoding="utf-8")
    out = tmp_path / "plan.json"
    out.unlink(missing_ok=True)
    _run(capsys, [str(MLP_TINY), str(cluster), *QUICK, "--intra-only", "-o", str(out)], out)


PLAN_DOCUMENT = json.loads(MLP_PLAN.read_text())


@FUZZ
@given(document=mutated(PLAN_DOCUMENT), command=st.sampled_from(["show", "check", "diff"]))
def test_mutated_plans_through_show_check_and_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: Any, command: str
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(document, ensure_ascii=False))
    args = {
        "show": ["show", str(plan), "--ops"],
        "check": ["check", str(plan), "--model", str(MLP_TINY), "--cluster", str(P3)],
        "diff": ["diff", str(MLP_PLAN), str(plan), "--max-slowdown", "5%"],
    }[command]
    _run(capsys, args, tmp_path / "none.json")
    _run(capsys, ["show", str(plan), "--json"], tmp_path / "none.json")


@FUZZ
@given(data=st.data())
def test_truncated_and_flipped_models_through_plan_and_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: st.DataObject
) -> None:
    original = MLP_TINY.read_bytes()
    corrupted = bytearray(original)
    if data.draw(st.booleans(), label="truncate"):
        corrupted = corrupted[: data.draw(st.integers(0, len(original) - 1), label="at")]
    else:
        for _ in range(data.draw(st.integers(1, 4), label="flips")):
            at = data.draw(st.integers(0, len(original) - 1), label="offset")
            corrupted[at] = data.draw(st.integers(0, 255), label="byte")
    model = tmp_path / "model.onnx"
    model.write_bytes(bytes(corrupted))
    out = tmp_path / "plan.json"
    out.unlink(missing_ok=True)
    _run(capsys, [str(model), str(P3), *QUICK, "-o", str(out)], out)
    _run(capsys, ["check", str(MLP_PLAN), "--model", str(model)], tmp_path / "none.json")


@pytest.mark.parametrize("offset", range(0, 1807, 97))
def test_truncations_at_many_offsets_are_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], offset: int
) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(MLP_TINY.read_bytes()[:offset])
    out = tmp_path / "plan.json"
    assert _run(capsys, [str(model), str(P3), *QUICK, "-o", str(out)], out) in (0, 2)


def _limit_memory() -> None:
    limit = 2 << 30  # 2 GiB of address space: the CLI with numpy, onnx and highspy needs < 1
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bomb.yaml", "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))
            + "name: *i\n"),
        ("huge.yaml", P3.read_text().replace("hosts: 4 ", "hosts: 100000000 ")),
    ],
)  # fmt: skip
def test_hostile_clusters_in_a_memory_limited_child(tmp_path: Path, name: str, text: str) -> None:
    cluster = tmp_path / name
    cluster.write_text(text)
    out = tmp_path / "plan.json"
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", str(MLP_TINY), str(cluster), *QUICK, "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        preexec_fn=_limit_memory,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == [cluster]


def test_a_deep_plan_in_a_memory_limited_child(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("{" + '"a":[' * 100_000 + "]" * 100_000 + "}")
    for command in ("show", "check"):
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", command, str(deep)],
            capture_output=True, text=True, cwd=ROOT, preexec_fn=_limit_memory,
            timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "nested at most" in done.stderr


def test_random_seeded_plan_bytes_never_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(19)
    text = MLP_PLAN.read_bytes()
    plan = tmp_path / "plan.json"
    for _ in range(30):
        corrupted = bytearray(text)
        for _ in range(rng.randint(1, 3)):
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
        plan.write_bytes(bytes(corrupted))
        _run(capsys, ["show", str(plan)], tmp_path / "none.json")


PIN_TEXT = st.one_of(
    st.builds(
        "{}={}".format,
        st.sampled_from(["dp", "tp", "pp", "vp", "stages", "microbatch", "recompute", "x", ""]),
        st.one_of(st.integers(-2, 9).map(str), st.sampled_from(["full", "auto", "", "1e3"]),
                  st.text(max_size=6)),
    ),
    st.text(max_size=12),
)  # fmt: skip


@FUZZ
@given(pins=st.lists(PIN_TEXT, max_size=3), intra_only=st.booleans())
def test_random_pins_never_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pins: list[str], intra_only: bool
) -> None:
    out = tmp_path / "plan.json"
    out.unlink(missing_ok=True)
    flags = [part for pin in pins for part in ("--pin", pin)]
    flags += ["--intra-only"] if intra_only else []
    _run(capsys, [str(MLP_TINY), str(P3), *QUICK, *flags, "-o", str(out)], out)
