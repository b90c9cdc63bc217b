"""Cluster values and the YAML loader: presets, the --hosts override, one error per bad field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cost_models.cluster import Cluster, Gpu, Link
from cost_models.cluster_yaml import load_cluster, parse_cluster
from plans.errors import InputError

CLUSTERS = Path(__file__).resolve().parent.parent / "examples" / "clusters"

VALID = """\
name: aws-p3.16xlarge
hosts: 4
gpus_per_host: 8
gpu:
  name: V100-SXM2-16GB
  memory: 16 GiB
  flops: {float16: 125 TFLOP/s, float32: 15.7 TFLOP/s}
  memory_bandwidth: 900 GB/s
links:
  intra_host: {bandwidth: 150 GB/s, latency: 5 us}
  inter_host: {bandwidth: 25 Gbit/s, latency: 20 us}
"""


def _replaced(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new)


# --- the values -----------------------------------------------------------------------------


def test_valid_text_parses_to_the_expected_cluster() -> None:
    cluster = parse_cluster(VALID, "cluster.yaml")
    assert cluster == Cluster(
        name="aws-p3.16xlarge",
        hosts=4,
        gpus_per_host=8,
        gpu=Gpu(
            name="V100-SXM2-16GB",
            memory_bytes=17179869184,
            peak_flops_by_dtype=(("float16", 125e12), ("float32", 15.7e12)),
            memory_bandwidth_bytes_per_s=900e9,
        ),
        intra_host=Link(bandwidth_bytes_per_s=150e9, latency_s=5e-6),
        inter_host=Link(bandwidth_bytes_per_s=3.125e9, latency_s=20e-6),
        calibration_path=None,
    )
    assert cluster.num_devices == 32


def test_gpu_sorts_flops_by_dtype_and_names_known_dtypes_when_one_is_missing() -> None:
    gpu = Gpu("V100", 2**34, (("float32", 15.7e12), ("float16", 125e12)), 900e9)
    assert gpu.peak_flops_by_dtype == (("float16", 125e12), ("float32", 15.7e12))
    assert gpu == Gpu("V100", 2**34, (("float16", 125e12), ("float32", 15.7e12)), 900e9)
    assert gpu.peak_flops("float16") == 125e12
    with pytest.raises(
        ValueError,
        match=r"^GPU 'V100' has no peak FLOP/s for dtype 'bfloat16'; known: float16, float32$",
    ):
        gpu.peak_flops("bfloat16")


def test_values_are_frozen_and_hashable() -> None:
    cluster = parse_cluster(VALID, "cluster.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cluster.hosts = 2  # type: ignore[misc]
    assert hash(cluster) == hash(parse_cluster(VALID, "other.yaml"))


def test_with_hosts_changes_only_the_host_count() -> None:
    cluster = parse_cluster(VALID, "cluster.yaml")
    bigger = cluster.with_hosts(16)
    assert bigger.num_devices == 128
    assert dataclasses.replace(bigger, hosts=4) == cluster
    with pytest.raises(ValueError):
        cluster.with_hosts(0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Gpu("g", 0, (("float16", 1.0),), 1.0),
        lambda: Gpu("g", 1, (), 1.0),
        lambda: Gpu("g", 1, (("fp16", 1.0),), 1.0),
        lambda: Gpu("g", 1, (("float16", 1.0), ("float16", 2.0)), 1.0),
        lambda: Gpu("g", 1, (("float16", -1.0),), 1.0),
        lambda: Link(bandwidth_bytes_per_s=0.0, latency_s=0.0),
        lambda: Link(bandwidth_bytes_per_s=1.0, latency_s=-1.0),
        lambda: Link(bandwidth_bytes_per_s=float("inf"), latency_s=0.0),
    ],
)
def test_direct_construction_rejects_nonsense(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


# --- presets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "hosts", "num_devices", "memory_bytes", "dtypes"),
    [
        ("aws-p3.16xlarge.yaml", 4, 32, 16 * 2**30, ("float16", "float32")),
        ("aws-p3.8xlarge.yaml", 4, 16, 16 * 2**30, ("float16", "float32")),
        (
            "aws-p4d.24xlarge.yaml",
            2,
            16,
            40 * 2**30,
            ("bfloat16", "float16", "float32", "tfloat32"),
        ),
        (
            "dgx-h100.yaml",
            4,
            32,
            80 * 2**30,
            ("bfloat16", "float16", "float32", "float8", "tfloat32"),
        ),
    ],
)
def test_every_preset_loads_with_its_devices_and_memory(
    file_name: str, hosts: int, num_devices: int, memory_bytes: int, dtypes: tuple[str, ...]
) -> None:
    cluster = load_cluster(CLUSTERS / file_name)
    assert cluster.name == file_name.removesuffix(".yaml")
    assert cluster.hosts == hosts
    assert cluster.num_devices == num_devices
    assert cluster.gpu.memory_bytes == memory_bytes
    assert cluster.gpu.dtypes == dtypes
    # A GPU sends faster to its neighbours in the host than to other hosts.
    assert cluster.intra_host.bandwidth_bytes_per_s > cluster.inter_host.bandwidth_bytes_per_s


def test_the_presets_are_all_tested() -> None:
    assert sorted(path.name for path in CLUSTERS.glob("*.yaml")) == [
        "aws-p3.16xlarge.yaml",
        "aws-p3.8xlarge.yaml",
        "aws-p4d.24xlarge.yaml",
        "dgx-h100.yaml",
    ]


def test_preset_figures_from_the_datasheets() -> None:
    p3 = load_cluster(CLUSTERS / "aws-p3.16xlarge.yaml")
    assert p3.gpu.peak_flops("float16") == 125e12
    assert p3.inter_host.bandwidth_bytes_per_s == 25e9 / 8 / 8  # 25 Gbit/s NIC / 8 GPUs
    p3_8 = load_cluster(CLUSTERS / "aws-p3.8xlarge.yaml")
    assert p3_8.gpus_per_host == 4
    assert p3_8.inter_host.bandwidth_bytes_per_s == 10e9 / 8 / 4  # 10 Gbit/s NIC / 4 GPUs
    p4d = load_cluster(CLUSTERS / "aws-p4d.24xlarge.yaml")
    assert p4d.gpu.memory_bandwidth_bytes_per_s == 1555e9
    assert p4d.inter_host.bandwidth_bytes_per_s == 400e9 / 8 / 8  # 4 x 100 Gbit/s EFA / 8 GPUs
    h100 = load_cluster(CLUSTERS / "dgx-h100.yaml")
    assert h100.gpu.peak_flops("bfloat16") == 989e12
    assert h100.inter_host.bandwidth_bytes_per_s == 400e9 / 8  # one 400 Gbit/s NIC per GPU


@pytest.mark.parametrize("hosts", [1, 3, 64])
def test_hosts_override_replaces_the_files_hosts(hosts: int) -> None:
    cluster = load_cluster(CLUSTERS / "dgx-h100.yaml", hosts=hosts)
    assert cluster.hosts == hosts
    assert cluster.num_devices == 8 * hosts
    assert cluster == load_cluster(CLUSTERS / "dgx-h100.yaml").with_hosts(hosts)


@pytest.mark.parametrize(("hosts", "found"), [(0, "0"), (-2, "-2"), (True, "True")])
def test_hosts_override_below_one_is_an_input_error(hosts: int, found: str) -> None:
    with pytest.raises(InputError) as caught:
        load_cluster(CLUSTERS / "dgx-h100.yaml", hosts=hosts)
    assert str(caught.value) == f"--hosts: expected a positive integer, found {found}"


# --- calibration ----------------------------------------------------------------------------


def test_calibration_path_is_resolved_against_the_yaml_folder(tmp_path: Path) -> None:
    folder = tmp_path / "clusters"
    folder.mkdir()
    path = folder / "cluster.yaml"
    path.write_text(VALID + "calibration: measured/p3.json\n", encoding="utf-8")
    assert load_cluster(path).calibration_path == str(folder / "measured" / "p3.json")
    absolute = tmp_path / "elsewhere.json"
    path.write_text(VALID + f"calibration: {absolute}\n", encoding="utf-8")
    assert load_cluster(path).calibration_path == str(absolute)


def test_calibration_path_with_explicit_base_dir() -> None:
    cluster = parse_cluster(VALID + "calibration: cal.json\n", "<stdin>", base_dir="/etc/alpa")
    assert cluster.calibration_path == str(Path("/etc/alpa") / "cal.json")


# --- one InputError per bad field -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            _replaced("25 Gbit/s", "fast"),
            "cluster.yaml: links.inter_host.bandwidth: "
            "expected a bandwidth such as '25 Gbit/s', found 'fast'",
        ),
        (
            _replaced("25 Gbit/s", "25 GB"),
            "cluster.yaml: links.inter_host.bandwidth: "
            "expected a bandwidth such as '25 Gbit/s', found '25 GB'",
        ),
        (
            _replaced("150 GB/s", "0 GB/s"),
            "cluster.yaml: links.intra_host.bandwidth: "
            "expected a positive bandwidth such as '25 Gbit/s', found '0 GB/s'",
        ),
        (
            _replaced("latency: 20 us", "latency: -20 us"),
            "cluster.yaml: links.inter_host.latency: "
            "expected a non-negative time such as '5 us', found '-20 us'",
        ),
        (
            _replaced("gpus_per_host: 8", "gpus_per_host: -2"),
            "cluster.yaml: gpus_per_host: expected a positive integer, found -2",
        ),
        (
            _replaced("hosts: 4", "hosts: 4.5"),
            "cluster.yaml: hosts: expected a positive integer, found 4.5",
        ),
        (
            _replaced("hosts: 4", "hosts: true"),
            "cluster.yaml: hosts: expected a positive integer, found True",
        ),
        (
            _replaced("hosts: 4", "hosts: '4'"),
            "cluster.yaml: hosts: expected a positive integer, found '4'",
        ),
        (
            _replaced("memory: 16 GiB", "memory: 16 GiB/s"),
            "cluster.yaml: gpu.memory: expected a size such as '16 GiB', found '16 GiB/s'",
        ),
        (
            _replaced("memory: 16 GiB", "memory:"),
            "cluster.yaml: gpu.memory: expected a size such as '16 GiB', found nothing",
        ),
        (
            _replaced("memory_bandwidth: 900 GB/s", "memory_bandwidth: 900 Gb/s"),
            "cluster.yaml: gpu.memory_bandwidth: "
            "expected a bandwidth such as '25 Gbit/s', found '900 Gb/s'",
        ),
        (
            _replaced("15.7 TFLOP/s", "lots"),
            "cluster.yaml: gpu.flops.float32: "
            "expected a compute rate such as '125 TFLOP/s', found 'lots'",
        ),
        (
            _replaced("float16: 125", "fp16: 125"),
            "cluster.yaml: gpu.flops.fp16: "
            "expected one of the dtypes bfloat16, float16, float32, float8, tfloat32, "
            "found unknown dtype 'fp16'",
        ),
        (
            _replaced("{float16: 125 TFLOP/s, float32: 15.7 TFLOP/s}", "{}"),
            "cluster.yaml: gpu.flops: "
            "expected at least one dtype such as {float16: 125 TFLOP/s}, found an empty mapping",
        ),
        (
            _replaced("{float16: 125 TFLOP/s, float32: 15.7 TFLOP/s}", "125 TFLOP/s"),
            "cluster.yaml: gpu.flops: expected a mapping with the dtypes "
            "bfloat16, float16, float32, float8, tfloat32, found '125 TFLOP/s'",
        ),
        (
            _replaced("name: aws-p3.16xlarge", "name: ''"),
            "cluster.yaml: name: expected a non-empty string, found ''",
        ),
        (
            _replaced("  name: V100-SXM2-16GB", "  name: 100"),
            "cluster.yaml: gpu.name: expected a non-empty string, found 100",
        ),
        (
            _replaced("  intra_host: {bandwidth: 150 GB/s, latency: 5 us}", "  intra_host: [1, 2]"),
            "cluster.yaml: links.intra_host: "
            "expected a mapping with the keys bandwidth, latency, found a list",
        ),
        (
            VALID + "calibration: 3\n",
            "cluster.yaml: calibration: expected a file path, found 3",
        ),
    ],
)
def test_each_bad_field_is_one_input_error_naming_file_field_expected_found(
    text: str, message: str
) -> None:
    with pytest.raises(InputError) as caught:
        parse_cluster(text, "cluster.yaml")
    assert str(caught.value) == message
    assert caught.value.file == "cluster.yaml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            _replaced("hosts: 4\n", ""),
            "cluster.yaml: hosts: expected a value, found nothing",
        ),
        (
            _replaced("  memory_bandwidth: 900 GB/s\n", ""),
            "cluster.yaml: gpu.memory_bandwidth: expected a value, found nothing",
        ),
        (
            _replaced("  inter_host: {bandwidth: 25 Gbit/s, latency: 20 us}\n", ""),
            "cluster.yaml: links.inter_host: expected a value, found nothing",
        ),
        (
            _replaced("latency: 5 us", "lat: 5 us"),
            "cluster.yaml: links.intra_host.lat: expected one of the keys bandwidth, latency, "
            "found unknown key 'lat' (did you mean 'latency'?)",
        ),
    ],
)
def test_missing_fields_are_input_errors(text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_cluster(text, "cluster.yaml")
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            _replaced("gpus_per_host: 8", "gpus_per_hots: 8"),
            "cluster.yaml: gpus_per_hots: expected one of the keys "
            "name, hosts, gpus_per_host, gpu, links, calibration, "
            "found unknown key 'gpus_per_hots' (did you mean 'gpus_per_host'?)",
        ),
        (
            VALID + "interconnect: nvlink\n",
            "cluster.yaml: interconnect: expected one of the keys "
            "name, hosts, gpus_per_host, gpu, links, calibration, found unknown key 'interconnect'",
        ),
        (
            _replaced("  memory: 16 GiB", "  memory: 16 GiB\n  memroy: 32 GiB"),
            "cluster.yaml: gpu.memroy: expected one of the keys "
            "name, memory, flops, memory_bandwidth, found unknown key 'memroy' "
            "(did you mean 'memory'?)",
        ),
        (
            _replaced("links:\n", "links:\n  cross_rack: {bandwidth: 1 GB/s, latency: 1 ms}\n"),
            "cluster.yaml: links.cross_rack: expected one of the keys intra_host, inter_host, "
            "found unknown key 'cross_rack'",
        ),
        (
            VALID + "hosts: 8\n",
            "cluster.yaml: hosts: expected each key once, found it again on line 12",
        ),
    ],
)
def test_unknown_and_duplicate_keys_are_rejected(text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_cluster(text, "cluster.yaml")
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: a\nhosts: [1\n",
            "cluster.yaml: expected valid YAML, "
            "found expected ',' or ']', but got '<stream end>' (line 3, column 1)",
        ),
        (
            "name: a\n  hosts: 4\n",
            "cluster.yaml: expected valid YAML, "
            "found mapping values are not allowed here (line 2, column 8)",
        ),
        ("", "cluster.yaml: expected a YAML mapping at the top level, found an empty document"),
        ("- a\n- b\n", "cluster.yaml: expected a YAML mapping at the top level, found a list"),
        ("just text", "cluster.yaml: expected a YAML mapping at the top level, found a string"),
    ],
)
def test_malformed_yaml_and_wrong_top_level_are_input_errors(text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_cluster(text, "cluster.yaml")
    assert str(caught.value) == message
    assert caught.value.field == ""


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(InputError) as caught:
        load_cluster(path)
    assert str(caught.value) == f"{path}: expected a readable file, found no such file"


def test_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_cluster(tmp_path)
    assert str(caught.value) == f"{tmp_path}: expected a readable file, found a directory"


def test_non_utf8_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(InputError) as caught:
        load_cluster(path)
    assert str(caught.value) == f"{path}: expected UTF-8 text, found a non-UTF-8 byte at offset 9"


def test_load_cluster_names_the_path_as_given(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(_replaced("gpus_per_host: 8", "gpus_per_host: -2"), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_cluster(str(path))
    assert str(caught.value) == f"{path}: gpus_per_host: expected a positive integer, found -2"
