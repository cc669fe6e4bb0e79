"""Operator audit of an ONNX graph: what is in it, and what TensorRT's ONNX parser will refuse.

Runs before any engine build so that a user sees one clear message instead of a parser assert.
Sources: onnx-tensorrt's operator matrix (docs/operators.md, TensorRT 8.5-10.x) and the
GridSample-20 mode rename that the parser misreads (NVIDIA/TensorRT#4646, onnx-tensorrt#1060).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import onnx

from harness.errors import UnsupportedOperator

#: ONNX operators that onnx-tensorrt's support matrix marks "N".
TRT_UNSUPPORTED = frozenset({
    "Bernoulli", "BitShift", "BlackmanWindow", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det",
    "DynamicQuantizeLinear", "HammingWindow", "HannWindow", "Hardmax", "MatMulInteger", "MaxRoiPool", "MaxUnpool",
    "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement",
    "OptionalHasElement", "QLinearConv", "QLinearMatMul", "STFT", "SequenceAt", "SequenceConstruct", "SequenceEmpty",
    "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss",
    "SplitToSequence", "StringNormalizer", "TfIdfVectorizer", "Unique",
})
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class Finding:
    node: str
    op: str
    problem: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return {"node": self.node, "op": self.op, "problem": self.problem, "fix": self.fix}


@dataclass(frozen=True)
class Audit:
    opset: int
    node_count: int
    op_counts: dict[str, int]
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def trt_ready(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "opset": self.opset,
            "node_count": self.node_count,
            "op_counts": dict(sorted(self.op_counts.items())),
            "trt_findings": [f.as_dict() for f in self.findings],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Audit:
        findings = tuple(Finding(**f) for f in data.get("trt_findings", []))
        return cls(int(data.get("opset", 0)), int(data.get("node_count", 0)),
                   dict(data.get("op_counts", {})), findings)

    def require_trt_ready(self, subject: str) -> None:
        """Raise ``UnsupportedOperator`` listing every finding; call before an engine build."""
        if self.findings:
            listed = "; ".join(f"{f.node} ({f.op}): {f.problem}" for f in self.findings[:6])
            more = f" (+{len(self.findings) - 6} more)" if len(self.findings) > 6 else ""
            raise UnsupportedOperator(
                subject, "TensorRT's ONNX parser cannot take this graph", observed=listed + more,
                expected="only operators onnx-tensorrt supports, in the default ONNX domain",
                fix=self.findings[0].fix,
            )


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in _DEFAULT_DOMAINS:
            return int(entry.version)
    return 0


def _attr(node: onnx.NodeProto, name: str) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return None


def audit_model(model: onnx.ModelProto) -> Audit:
    opset = _opset(model)
    counts = Counter(
        (n.op_type if n.domain in _DEFAULT_DOMAINS else f"{n.domain}::{n.op_type}") for n in model.graph.node
    )
    findings: list[Finding] = []
    for index, node in enumerate(model.graph.node):
        name = node.name or f"node{index}"
        if node.domain not in _DEFAULT_DOMAINS:
            findings.append(Finding(
                name, f"{node.domain}::{node.op_type}",
                f"custom-domain operator '{node.domain}::{node.op_type}' is not in TensorRT's ONNX parser: "
                "TensorRT needs a plugin for it",
                "use --harness-workarounds precomputed (inverse computed in data preparation) or closed_form "
                "(inverse from standard operators), which TensorRT parses",
            ))
        elif node.op_type in TRT_UNSUPPORTED:
            findings.append(Finding(name, node.op_type, f"'{node.op_type}' is not supported by onnx-tensorrt",
                                    "rewrite that part of the model with supported operators"))
        elif node.op_type == "GridSample" and opset >= 20:
            mode = _attr(node, "mode")
            mode_text = mode.decode() if isinstance(mode, bytes) else str(mode or "linear")
            findings.append(Finding(
                name, "GridSample",
                f"opset {opset} GridSample (mode '{mode_text}') is silently read as NEAREST by TensorRT's parser "
                "(NVIDIA/TensorRT#4646)",
                "export with opset 17-19 (--harness-opset 17)",
            ))
    return Audit(opset=opset, node_count=len(model.graph.node), op_counts=dict(counts), findings=tuple(findings))
