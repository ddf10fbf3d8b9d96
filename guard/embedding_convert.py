"""Rewrite the int8 MiniLM ONNX graph so that its weights stay int8 in memory.

The packaged model stores each weight as int8 plus a scale and dequantizes it in the graph
(``Cast -> Mul -> MatMul``/``Gather``). onnxruntime constant-folds that into fp32 copies of
every weight, which costs about 160 MB of RSS. This rewrite (run once, in a child process, by
guard.embedding; the result is cached on disk) turns:

- the word-embedding lookup into ``Gather(int8 table) -> Cast -> Mul(gathered scales)``, so only
  the looked-up rows are dequantized;
- each weight ``MatMul`` into ``DynamicQuantizeLinear(x) -> MatMulInteger(x_q, w_q) -> Cast ->
  Mul(x_scale * w_scale)`` (dynamic int8 quantization of the activations, int8 weights).

It also exposes the hidden states of layers 3 to 5 (``LAYER_OUTPUTS``) beside the last one: the
harm prior reads them pooled (guard.embedding ``layers``), at no extra compute.

    python -m guard.embedding_convert SRC DST
"""

from __future__ import annotations

import sys

# each transformer layer ends in a LayerNormalization; the embeddings' own comes first, so layer k's
# output is layer_norm_{2k} (layer 6's is the graph's output, last_hidden_state)
LAYER_OUTPUTS = ("layer_norm_6", "layer_norm_8", "layer_norm_10")


def convert(src: str, dst: str) -> None:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(src)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def dequant_source(name: str):
        """(mul, cast, w_q name, scale name) if ``name`` is Mul(Cast(int8 init), float init)."""
        mul = producer.get(name)
        if mul is None or mul.op_type != "Mul":
            return None
        a, b = mul.input
        cast = producer.get(a)
        if cast is None or cast.op_type != "Cast" or cast.input[0] not in inits or b not in inits:
            return None
        if inits[cast.input[0]].data_type != onnx.TensorProto.INT8:
            return None
        return mul, cast, cast.input[0], b

    new_nodes = []
    remove = set()
    replaced_gather = replaced_matmul = 0
    for n in g.node:
        if n.op_type == "Gather" and (src_ := dequant_source(n.input[0])) and inits[src_[2]].dims[0] > 4096:
            mul, cast, wq, scale = src_
            k = n.output[0]
            new_nodes += [(n, [helper.make_node("Gather", [wq, n.input[1]], [k + "_q"]),
                               helper.make_node("Gather", [scale, n.input[1]], [k + "_s"]),
                               helper.make_node("Cast", [k + "_q"], [k + "_qf"], to=onnx.TensorProto.FLOAT),
                               helper.make_node("Mul", [k + "_qf", k + "_s"], [k])])]
            remove |= {id(n), id(mul), id(cast)}
            replaced_gather += 1
        elif n.op_type == "MatMul" and (src_ := dequant_source(n.input[1])):
            mul, cast, wq, scale = src_
            sc = numpy_helper.to_array(inits[scale])
            if sc.ndim != 2 or sc.shape[0] != 1 or len(consumers.get(mul.output[0], [])) != 1:
                continue
            k = n.output[0]
            zero = k + "_wzp"
            g.initializer.append(numpy_helper.from_array(np.zeros((), dtype=np.int8), zero))
            new_nodes += [(n, [helper.make_node("DynamicQuantizeLinear", [n.input[0]], [k + "_xq", k + "_xs", k + "_xzp"]),
                               helper.make_node("MatMulInteger", [k + "_xq", wq, k + "_xzp", zero], [k + "_i32"]),
                               helper.make_node("Cast", [k + "_i32"], [k + "_f"], to=onnx.TensorProto.FLOAT),
                               helper.make_node("Mul", [k + "_xs", scale], [k + "_sc"]),
                               helper.make_node("Mul", [k + "_f", k + "_sc"], [k])])]
            remove |= {id(n), id(mul), id(cast)}
            replaced_matmul += 1
    replacement = {id(old): nodes for old, nodes in new_nodes}
    nodes = []
    for n in g.node:
        if id(n) in replacement:
            nodes.extend(replacement[id(n)])
        elif id(n) not in remove:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    produced = {o for n in g.node for o in n.output}
    missing = [name for name in LAYER_OUTPUTS if name not in produced]
    if missing:
        raise SystemExit(f"{src}: no node produces {', '.join(missing)} (not the all-MiniLM-L6-v2 graph this expects)")
    g.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", "tokens", 384])
                    for name in LAYER_OUTPUTS)
    onnx.checker.check_model(m)
    onnx.save(m, dst)
    print(f"rewrote {replaced_gather} embedding lookup(s) and {replaced_matmul} matmul(s)")


if __name__ == "__main__":
    convert(sys.argv[1], sys.argv[2])
