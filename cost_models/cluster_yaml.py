"""Read a cluster description (YAML) into a `Cluster`, and read and write calibration files
(`cost_models.calibration`); the only module that imports ``yaml``.

Format (every quantity takes units, see `cost_models.units`)::

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
      inter_host: {bandwidth: 3.125 Gbit/s, latency: 20 us}
    calibration: p3-measured.yaml   # optional, relative to this file's folder

Link bandwidth is what one GPU can send on that link kind (see `cost_models.cluster`). Every
problem is one `InputError` naming the file and the dotted field; unknown and duplicate keys are
errors, so a typo never passes silently. Hostile files are refused before they are expanded: a
file over `limits.MAX_YAML_BYTES`, nesting deeper than `limits.MAX_YAML_DEPTH`, and any anchor or
alias (`&a`, `*a`: a 1 KB "billion laughs" file expands to gigabytes) are errors naming the
line; counts past their bound in `plans.limits` are errors before anything is allocated.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import yaml

from cost_models.calibration import (
    CALIBRATION_FORMAT,
    COLLECTIVES,
    LINK_KINDS,
    OP_CLASSES,
    Calibration,
    CollectiveSample,
    Curve,
    LinkFit,
)
from cost_models.cluster import PEAK_FLOPS_DTYPES, Cluster, Gpu, Link
from cost_models.units import (
    QuantityError,
    describe_value,
    format_bandwidth,
    format_flops_rate,
    format_seconds,
    parse_bandwidth,
    parse_bytes,
    parse_flops_rate,
    parse_seconds,
)
from plans import limits
from plans.errors import InputError

__all__ = [
    "calibration_to_yaml",
    "load_calibration",
    "load_cluster",
    "parse_calibration",
    "parse_cluster",
]

_T = TypeVar("_T")

_TOP_KEYS = ("name", "hosts", "gpus_per_host", "gpu", "links", "calibration")
_TOP_OPTIONAL = ("calibration",)
_GPU_KEYS = ("name", "memory", "flops", "memory_bandwidth")
_LINKS_KEYS = ("intra_host", "inter_host")
_LINK_KEYS = ("bandwidth", "latency")


def load_cluster(path: str | Path, hosts: int | None = None) -> Cluster:
    """Read the cluster file at ``path``; ``hosts`` (the CLI's ``--hosts N``) overrides its hosts.

    Raises `InputError` for a bad override, an unreadable file or any invalid field.
    """
    source = str(path)
    if hosts is not None:
        if not _is_positive_int(hosts):
            raise InputError("--hosts", "", "a positive integer", describe_value(hosts))
        if hosts > limits.MAX_HOSTS:
            raise InputError("--hosts", "", *limits.too_many(limits.MAX_HOSTS, hosts))
    cluster = parse_cluster(_read_text(path), source)
    if hosts is None:
        return cluster
    _check_total_gpus("--hosts", "", hosts, cluster.gpus_per_host)
    return cluster.with_hosts(hosts)


def _check_total_gpus(file: str, field: str, hosts: int, gpus_per_host: int) -> None:
    """`limits.MAX_GPUS` in all: hosts x GPUs per host."""
    if hosts * gpus_per_host > limits.MAX_GPUS:
        raise InputError(
            file,
            field,
            f"at most {limits.MAX_GPUS // gpus_per_host} hosts of {gpus_per_host} GPUs "
            f"(at most {limits.MAX_GPUS} GPUs in all)",
            str(hosts),
        )


def _read_text(path: str | Path) -> str:
    """The file's UTF-8 text, refused past `limits.MAX_YAML_BYTES` without reading the rest."""
    source = str(path)
    try:
        with Path(path).open("rb") as stream:
            data = stream.read(limits.MAX_YAML_BYTES + 1)
        if len(data) > limits.MAX_YAML_BYTES:
            raise InputError(
                source,
                "",
                f"a YAML file of at most {limits.MAX_YAML_BYTES} bytes",
                "a larger file",
            )
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise InputError(source, "", "a readable file", "no such file") from None
    except IsADirectoryError:
        raise InputError(source, "", "a readable file", "a directory") from None
    except UnicodeDecodeError as error:
        raise InputError(
            source, "", "UTF-8 text", f"a non-UTF-8 byte at offset {error.start}"
        ) from None
    except OSError as error:
        raise InputError(source, "", "a readable file", error.strerror or str(error)) from None
    return text


def parse_cluster(text: str, source: str, *, base_dir: str | Path | None = None) -> Cluster:
    """Parse cluster YAML ``text``; ``source`` names it in errors.

    A relative ``calibration`` path is resolved against ``base_dir``, by default the folder of
    ``source``.
    """
    document = _load_yaml(text, source)
    if not isinstance(document, dict):
        raise InputError(source, "", "a YAML mapping at the top level", _describe_type(document))
    fields = _Fields(source)
    fields.check_keys(document, "", _TOP_KEYS, required=_exclude(_TOP_KEYS, _TOP_OPTIONAL))

    name = fields.string(document, "name")
    num_hosts = fields.positive_int(document, "hosts", maximum=limits.MAX_HOSTS)
    gpus_per_host = fields.positive_int(document, "gpus_per_host", maximum=limits.MAX_GPUS_PER_HOST)
    _check_total_gpus(source, "hosts", num_hosts, gpus_per_host)

    gpu_fields = fields.mapping(document, "gpu", _GPU_KEYS)
    gpu = Gpu(
        name=fields.string(gpu_fields, "gpu.name"),
        memory_bytes=fields.quantity(gpu_fields, "gpu.memory", parse_bytes),
        peak_flops_by_dtype=_peak_flops(fields, gpu_fields),
        memory_bandwidth_bytes_per_s=fields.quantity(
            gpu_fields, "gpu.memory_bandwidth", parse_bandwidth
        ),
    )

    links = fields.mapping(document, "links", _LINKS_KEYS)
    intra_host, inter_host = (_link(fields, links, f"links.{kind}") for kind in _LINKS_KEYS)

    calibration_path = None
    if "calibration" in document:
        relative = fields.string(document, "calibration", expected="a file path")
        folder = Path(source).parent if base_dir is None else Path(base_dir)
        calibration_path = str(folder / relative)

    return Cluster(
        name=name,
        hosts=num_hosts,
        gpus_per_host=gpus_per_host,
        gpu=gpu,
        intra_host=intra_host,
        inter_host=inter_host,
        calibration_path=calibration_path,
    )


def _peak_flops(fields: _Fields, gpu_fields: dict[object, object]) -> tuple[tuple[str, float], ...]:
    flops_fields = fields.mapping(
        gpu_fields, "gpu.flops", PEAK_FLOPS_DTYPES, required=(), what="dtype"
    )
    if not flops_fields:
        raise InputError(
            fields.source,
            "gpu.flops",
            "at least one dtype such as {float16: 125 TFLOP/s}",
            "an empty mapping",
        )
    return tuple(
        (str(dtype), fields.quantity(flops_fields, f"gpu.flops.{dtype}", parse_flops_rate))
        for dtype in flops_fields
    )


def _link(fields: _Fields, links: dict[object, object], field: str) -> Link:
    link_fields = fields.mapping(links, field, _LINK_KEYS)
    return Link(
        bandwidth_bytes_per_s=fields.quantity(link_fields, f"{field}.bandwidth", parse_bandwidth),
        latency_s=fields.quantity(link_fields, f"{field}.latency", parse_seconds, positive=False),
    )


class _Fields:
    """Reads typed fields out of the parsed YAML, raising one `InputError` per problem.

    ``field`` arguments are dotted paths from the top; the last part is the key to read.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, field: str, expected: str, found: str) -> InputError:
        return InputError(self.source, field, expected, found)

    def check_keys(
        self,
        values: dict[object, object],
        field: str,
        allowed: tuple[str, ...],
        *,
        required: tuple[str, ...],
        what: str = "key",
    ) -> None:
        prefix = f"{field}." if field else ""
        for key in values:
            if key not in allowed:
                hint = ""
                close = difflib.get_close_matches(str(key), allowed, n=1)
                if close:
                    hint = f" (did you mean {close[0]!r}?)"
                raise self.error(
                    f"{prefix}{key}",
                    f"one of the {what}s {', '.join(allowed)}",
                    f"unknown {what} {describe_value(key)}{hint}",
                )
        for key in required:
            if key not in values:
                raise self.error(f"{prefix}{key}", "a value", "nothing")

    def mapping(
        self,
        values: Mapping[object, object],
        field: str,
        allowed: tuple[str, ...],
        *,
        required: tuple[str, ...] | None = None,
        what: str = "key",
    ) -> dict[object, object]:
        """The mapping at ``field``: only ``allowed`` keys, all of ``required`` (default: all)."""
        value = values[_last(field)]
        if not isinstance(value, dict):
            raise self.error(
                field, f"a mapping with the {what}s {', '.join(allowed)}", _show(value)
            )
        needed = allowed if required is None else required
        self.check_keys(value, field, allowed, required=needed, what=what)
        return value

    def string(
        self, values: Mapping[object, object], field: str, *, expected: str = "a non-empty string"
    ) -> str:
        value = values[_last(field)]
        if not isinstance(value, str) or not value.strip():
            raise self.error(field, expected, _show(value))
        return value

    def positive_int(
        self, values: Mapping[object, object], field: str, *, maximum: int | None = None
    ) -> int:
        value = values[_last(field)]
        if not _is_positive_int(value):
            raise self.error(field, "a positive integer", _show(value))
        assert isinstance(value, int)
        if maximum is not None and value > maximum:
            raise self.error(field, *limits.too_many(maximum, value))
        return value

    def quantity(
        self,
        values: Mapping[object, object],
        field: str,
        parse: Callable[..., _T],
        *,
        positive: bool = True,
    ) -> _T:
        try:
            return parse(values[_last(field)], positive=positive)
        except QuantityError as error:
            raise self.error(field, error.expected, error.found) from None


def _load_yaml(text: str, source: str) -> object:
    """``yaml.safe_load`` that first refuses what could expand or nest without bound (the
    module docstring) and rejects duplicate keys (PyYAML keeps the last silently)."""
    if len(text.encode("utf-8", "surrogatepass")) > limits.MAX_YAML_BYTES:
        raise InputError(
            source, "", f"a YAML file of at most {limits.MAX_YAML_BYTES} bytes", "a larger file"
        )
    try:
        _check_events(text, source)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _check_duplicate_keys(root, source, "")
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "a YAML error"
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise InputError(source, "", "valid YAML", _one_line(f"{problem}{where}")) from None
    except yaml.YAMLError as error:
        raise InputError(source, "", "valid YAML", _one_line(str(error))) from None
    except (ValueError, OverflowError) as error:  # a scalar's constructor: 2025-13-01, 10^5000
        if isinstance(error, InputError):
            raise
        raise InputError(source, "", "valid YAML values", _one_line(str(error))) from None


def _check_events(text: str, source: str) -> None:
    """Refuse anchors, aliases and nesting past `limits.MAX_YAML_DEPTH`, from the parser's
    event stream (which expands nothing), naming the line."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.AliasEvent):
            raise InputError(
                source,
                "",
                "no YAML aliases or anchors (they are not expanded here)",
                f"the alias *{event.anchor} on line {line}",
            )
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            raise InputError(
                source,
                "",
                "no YAML aliases or anchors (they are not expanded here)",
                f"the anchor &{event.anchor} on line {line}",
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > limits.MAX_YAML_DEPTH:
                raise InputError(
                    source,
                    "",
                    f"mappings and lists nested at most {limits.MAX_YAML_DEPTH} deep",
                    f"deeper nesting on line {line}",
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _check_duplicate_keys(node: yaml.Node, source: str, field: str) -> None:
    prefix = f"{field}." if field else ""
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise InputError(
                    source, f"{prefix}{key}", "each key once", f"it again on line {line}"
                )
            seen.add(key)
            _check_duplicate_keys(value_node, source, f"{prefix}{key}")
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(item, source, f"{field}[{index}]")


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _last(field: str) -> str:
    return field.rsplit(".", 1)[-1]


def _exclude(keys: tuple[str, ...], excluded: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(key for key in keys if key not in excluded)


def _show(value: object) -> str:
    """A found value: a mapping or list by its type, anything else as written."""
    if isinstance(value, dict | list):
        return _describe_type(value)
    return describe_value(value)


def _describe_type(value: object) -> str:
    if value is None:
        return "an empty document"
    names = {dict: "a mapping", list: "a list", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), f"a {type(value).__name__}")


# --- calibration files (`alpa-plan profile` writes them, `--calibration` reads them) ----------

_CALIBRATION_KEYS = (
    "format",
    "device",
    "date",
    "software",
    "matmul",
    "elementwise",
    "reduction",
    "copy",
    "transcendental",
    "links",
)
_CALIBRATION_OPTIONAL = ("links", "copy", "transcendental")
_LINK_FIT_KEYS = ("bandwidth", "latency", "all_to_all", "samples")
_LINK_FIT_OPTIONAL = ("all_to_all", "samples")
_CURVE_EXPECTED = "a list of [work, seconds] pairs of positive numbers"


def load_calibration(path: str | Path) -> Calibration:
    """Read the calibration file at ``path`` (see `parse_calibration`)."""
    return parse_calibration(_read_text(path), str(path))


def parse_calibration(text: str, source: str) -> Calibration:
    """Parse calibration YAML ``text`` (the format `calibration_to_yaml` writes).

    Every problem is one `InputError` naming the file and the dotted field.
    """
    document = _load_yaml(text, source)
    if not isinstance(document, dict):
        raise InputError(source, "", "a YAML mapping at the top level", _describe_type(document))
    fields = _Fields(source)
    fields.check_keys(
        document,
        "",
        _CALIBRATION_KEYS,
        required=_exclude(_CALIBRATION_KEYS, _CALIBRATION_OPTIONAL),
    )
    if document["format"] != CALIBRATION_FORMAT:
        raise fields.error("format", repr(CALIBRATION_FORMAT), _show(document["format"]))
    device = fields.string(document, "device")
    date = document["date"]
    if hasattr(date, "isoformat"):  # an unquoted 2025-01-31 is a YAML date
        date = date.isoformat()
    if not isinstance(date, str) or not date.strip():
        raise fields.error("date", "a date such as '2025-01-31'", _show(date))

    software = document["software"]
    if not isinstance(software, dict):
        raise fields.error("software", "a mapping of package to version", _show(software))
    versions = []
    for name, version in software.items():
        if isinstance(version, bool) or not isinstance(version, str | int | float):
            raise fields.error(f"software.{name}", "a version such as '0.4.30'", _show(version))
        versions.append((str(name), str(version)))

    matmul_fields = fields.mapping(document, "matmul", PEAK_FLOPS_DTYPES, required=(), what="dtype")
    if not matmul_fields:
        raise fields.error(
            "matmul", "at least one dtype such as {float32: [[FLOPs, seconds], ...]}", "nothing"
        )
    matmul = tuple(
        (str(dtype), _curve(fields, matmul_fields, f"matmul.{dtype}")) for dtype in matmul_fields
    )
    elementwise = _curve(fields, document, "elementwise")
    reduction = _curve(fields, document, "reduction")
    op_classes = tuple(
        (name, _curve(fields, document, name)) for name, _ in OP_CLASSES if name in document
    )

    links: list[tuple[str, LinkFit]] = []
    if "links" in document:
        link_fields = fields.mapping(document, "links", LINK_KINDS, required=(), what="link kind")
        for kind in link_fields:
            links.append((str(kind), _link_fit(fields, link_fields, f"links.{kind}")))

    return Calibration(
        device=device,
        date=date,
        software=tuple(versions),
        matmul=matmul,
        elementwise=elementwise,
        reduction=reduction,
        links=tuple(links),
        op_classes=op_classes,
        source=Path(source).name,
        digest=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def _curve(fields: _Fields, values: Mapping[object, object], field: str) -> Curve:
    points = values[_last(field)]
    if not isinstance(points, list) or not points:
        raise fields.error(field, _CURVE_EXPECTED, _show(points))
    pairs = []
    for index, point in enumerate(points):
        where = f"{field}[{index}]"
        if not isinstance(point, list) or len(point) != 2:
            raise fields.error(where, "a [work, seconds] pair", _show(point))
        if not all(_is_positive_number(item) for item in point):
            raise fields.error(where, "two positive numbers", describe_value(point))
        pairs.append((float(point[0]), float(point[1])))
    for index in range(1, len(pairs)):
        (work_a, time_a), (work_b, time_b) = pairs[index - 1], pairs[index]
        if work_b <= work_a:
            raise fields.error(
                f"{field}[{index}]",
                f"work greater than the previous point's {work_a!r}",
                repr(work_b),
            )
        if time_b < time_a:
            raise fields.error(
                f"{field}[{index}]",
                f"seconds no less than the previous point's {time_a!r}",
                repr(time_b),
            )
    return Curve(tuple(pairs))


def _link_fit(fields: _Fields, values: dict[object, object], field: str) -> LinkFit:
    link_fields = fields.mapping(
        values, field, _LINK_FIT_KEYS, required=_exclude(_LINK_FIT_KEYS, _LINK_FIT_OPTIONAL)
    )
    all_to_all = None
    if "all_to_all" in link_fields:
        all_to_all = _link(fields, link_fields, f"{field}.all_to_all")
    samples: list[CollectiveSample] = []
    raw = link_fields.get("samples", [])
    if not isinstance(raw, list):
        raise fields.error(f"{field}.samples", "a list", _show(raw))
    for index, sample in enumerate(raw):
        where = f"{field}.samples[{index}]"
        expected = "[collective, group size, bytes, seconds] such as [all_reduce, 8, 4096, 1.0e-4]"
        if (
            not isinstance(sample, list)
            or len(sample) != 4
            or sample[0] not in COLLECTIVES
            or not _is_positive_int(sample[1])
            or not all(_is_positive_number(item) for item in sample[2:])
        ):
            raise fields.error(where, expected, describe_value(sample))
        samples.append(
            CollectiveSample(str(sample[0]), int(sample[1]), float(sample[2]), float(sample[3]))
        )
    link = Link(
        bandwidth_bytes_per_s=fields.quantity(link_fields, f"{field}.bandwidth", parse_bandwidth),
        latency_s=fields.quantity(link_fields, f"{field}.latency", parse_seconds, positive=False),
    )
    return LinkFit(link=link, samples=tuple(samples), all_to_all=all_to_all)


def _is_positive_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def calibration_to_yaml(calibration: Calibration, comment: str = "") -> str:
    """The calibration file's text: ``comment`` lines first (each prefixed ``# ``), then the
    fields, floats written exactly (``repr``), so reading it back gives the same values."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    lines += [
        f"format: {CALIBRATION_FORMAT}",
        f"device: {_quoted(calibration.device)}",
        f"date: {_quoted(calibration.date)}",
        "software:",
        *(f"  {name}: {_quoted(version)}" for name, version in calibration.software),
        "# Seconds of one contraction versus its FLOPs, per dtype: [FLOPs, seconds].",
        "matmul:",
    ]
    for dtype, curve in calibration.matmul:
        lines.append(
            f"  {dtype}:  # floor {format_seconds(curve.floor_s)}, "
            f"best {format_flops_rate(curve.best_rate)}"
        )
        lines += _curve_lines(curve, "  ")
    what_measured = {
        "copy": "a data movement op (transpose)",
        "transcendental": "a transcendental elementwise op (tanh)",
    }
    for name, curve, what in (
        ("elementwise", calibration.elementwise, "an elementwise op (Add)"),
        ("reduction", calibration.reduction, "a row reduction (softmax, last axis)"),
        *((name, curve, what_measured[name]) for name, curve in calibration.op_classes),
    ):
        lines.append(f"# Seconds of {what} versus bytes moved: [bytes, seconds].")
        lines.append(
            f"{name}:  # floor {format_seconds(curve.floor_s)}, "
            f"best {format_bandwidth(curve.best_rate)}"
        )
        lines += _curve_lines(curve, "")
    if calibration.links:
        lines.append("# Alpha-beta per link kind fitted to all-reduce, all-gather, reduce-scatter.")
        lines.append("links:")
        for kind, fit in calibration.links:
            lines.append(f"  {kind}:")
            lines += _link_lines(fit.link, "    ")
            if fit.all_to_all is not None:
                lines.append("    all_to_all:  # its own fit, for information")
                lines += _link_lines(fit.all_to_all, "      ")
            lines.append("    samples:  # [collective, group size, bytes, seconds]")
            lines += [
                f"    - [{s.collective}, {s.group_size}, {_float(s.num_bytes)}, "
                f"{_float(s.seconds)}]"
                for s in fit.samples
            ]
    text = "\n".join(lines) + "\n"
    parse_calibration(text, "calibration")  # what we write, we read back
    return text


def _curve_lines(curve: Curve, indent: str) -> list[str]:
    return [f"{indent}- [{_float(work)}, {_float(seconds)}]" for work, seconds in curve.points]


def _link_lines(link: Link, indent: str) -> list[str]:
    return [
        f"{indent}bandwidth: {_float(link.bandwidth_bytes_per_s)} B/s  "
        f"# {format_bandwidth(link.bandwidth_bytes_per_s)}",
        f"{indent}latency: {_float(link.latency_s)} s  # {format_seconds(link.latency_s)}",
    ]


def _float(value: float) -> str:
    """``repr`` that YAML 1.1 reads as a float: ``1e-05`` -> ``1.0e-05``."""
    text = repr(float(value))
    mantissa, sep, exponent = text.partition("e")
    if sep and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return text


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return json.dumps(text, ensure_ascii=False)
