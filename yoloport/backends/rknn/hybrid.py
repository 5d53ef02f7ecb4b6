"""Hybrid quantization: which tensors of the graph stay in float, and the step-1 config edit."""
from __future__ import annotations

import re
from pathlib import Path

from ...deploy.onnx_graph import ConvIO
from ...errors import YoloportError


def head_tensors(onnx_path, head_fp32: str) -> list[str]:
    """Tensor names of the head kept in float16 for ``head_fp32``: ``tail`` = outputs of every node
    downstream of the Detect convolutions (``/model.<last>/m.<i>/Conv``), ``convs`` = those too plus
    the convolutions' own outputs, ``none`` = nothing."""
    if head_fp32 == "none":
        return []
    import onnx

    g = onnx.load(str(onnx_path), load_external_data=False).graph
    det_idx = max((int(m.group(1)) for n in g.node for m in [re.match(r"/model\.(\d+)/", n.name)] if m), default=-1)
    det_prefix = f"/model.{det_idx}/m."
    convs = [n for n in g.node if n.op_type == "Conv" and n.name.startswith(det_prefix)]
    seeds = {o for n in convs for o in n.output}
    conv_names = {n.name for n in convs}
    downstream: list[str] = []
    reach = set(seeds)
    for n in g.node:  # nodes are topologically sorted in an exported graph
        if n.name in conv_names:
            continue
        if any(i in reach for i in n.input):
            reach.update(n.output)
            downstream.extend(n.output)
    names = downstream + (sorted(seeds) if head_fp32 == "convs" else [])
    return names


def excluded_tensors(onnx_path, exclude) -> list[str]:
    """Output tensor names of ONNX nodes named in ``exclude`` or whose op type is in it."""
    if not exclude:
        return []
    import onnx

    g = onnx.load(str(onnx_path), load_external_data=False).graph
    want = set(exclude)
    return [o for n in g.node if n.name in want or n.op_type in want for o in n.output]


def cfg_tensor_names(cfg_text: str) -> list[str]:
    """Tensor names listed under ``quantize_parameters`` of a ``.quantization.cfg``."""
    names, inside = [], False
    for line in cfg_text.splitlines():
        if line.startswith("quantize_parameters:"):
            inside = True
            continue
        if inside:
            m = re.match(r"^    (\S.*?):\s*$", line)
            if m:
                names.append(m.group(1).strip("'\""))
            elif line and not line.startswith(" "):
                inside = False
    return names


def match_layers(requested: dict, available: list[str]) -> dict:
    """``{name or layer prefix: dtype}`` -> ``{tensor name: dtype}`` over the cfg's tensors.

    A key matches a tensor exactly, or as a module path: ``model.24`` / ``/model.24/m.0`` match every
    tensor under ``/model.24/...``. A key matching nothing is a YoloportError listing examples."""
    out = {}
    for key, dt in requested.items():
        k = key.strip()
        prefix = "/" + k.strip("/") + "/"
        hits = [t for t in available if t == k or base_tensor_name(t) == k or t.startswith(prefix)]
        if not hits:
            sample = ", ".join(available[1:6])
            raise YoloportError(f"RKNN hybrid layer {key!r} matches no tensor of the model (tensors look like: {sample}, ...)")
        for t in hits:
            out[t] = dt
    return out


def edit_hybrid_cfg(cfg_path, layers: dict) -> dict:
    """Write ``layers`` ({tensor: dtype}, names present in the cfg) into ``custom_quantize_layers``
    of a step-1 ``.quantization.cfg`` (text edit: the rest of the file stays byte for byte)."""
    p = Path(cfg_path)
    text = p.read_text()
    marker = "custom_quantize_layers: {}"
    if marker not in text:
        raise YoloportError(f"{p}: unexpected hybrid quantization config (no empty custom_quantize_layers)")
    if layers:
        body = "custom_quantize_layers:\n" + "".join(f"    {_yaml_key(k)}: {v}\n" for k, v in layers.items())
        text = text.replace(marker + "\n", body, 1) if marker + "\n" in text else text.replace(marker, body.rstrip("\n"), 1)
        p.write_text(text)
    return layers


def _yaml_key(k: str) -> str:
    """A tensor name as a YAML key: plain when safe (``/model.0/conv/Conv_output_0``), else quoted."""
    return k if re.fullmatch(r"[A-Za-z0-9_./-]+", k) and k[0] != "-" else "'" + k.replace("'", "''") + "'"


def base_tensor_name(name: str) -> str:
    """A cfg tensor name without the toolkit's reshape suffix (``out2-rs``, ``..._output_0_rs``)."""
    return re.sub(r"(-rs|_rs)$", "", name)


def float_layer_hybrid(layers, conv_nodes: dict[str, str], conv_io: dict[str, ConvIO] | None = None,
                       dtype: str = "float16") -> dict:
    """Hybrid entries that keep the convolutions ``layers`` (torch module paths) out of int8: each
    conv's output and input tensors (from ``conv_io``; without it the conv's scope ``/model.1/conv``,
    which misses a Detect convolution whose output is a graph output) in ``dtype``. Measured on a
    tiny model: the output alone did not help, output + input did."""
    hybrid = {}
    for n in (conv_nodes[layer] for layer in layers):
        t_in, t_out, _ = (conv_io or {}).get(n) or ConvIO("", n.rsplit("/", 1)[0])
        hybrid[t_out] = dtype
        if t_in:
            hybrid[t_in] = dtype
    return hybrid
