"""deploy.onnx_graph's indexes: who writes a tensor, who reads it."""
from onnx import helper

from yoloport.deploy.onnx_graph import tensor_consumers, tensor_producers


def _graph():
    a = helper.make_node("Relu", ["x"], ["a"], name="a")
    b = helper.make_node("Mul", ["a", "a"], ["b"], name="b")  # reads a twice
    c = helper.make_node("Dropout", ["b"], ["c", ""], name="c")  # its optional mask output not produced
    d = helper.make_node("Add", ["a", "c"], ["d"], name="d")
    return helper.make_graph([a, b, c, d], "g", [], [])


def test_producers_index_every_written_tensor_and_skip_empty_names():
    g = _graph()
    p = tensor_producers(g)
    assert {k: n.name for k, n in p.items()} == {"a": "a", "b": "b", "c": "c", "d": "d"}
    assert tensor_producers(list(g.node)) == p  # a list of nodes works as the graph does


def test_consumers_list_each_reader_once_in_graph_order():
    c = tensor_consumers(_graph())
    assert [n.name for n in c["a"]] == ["b", "d"] and [n.name for n in c["x"]] == ["a"]
    assert "" not in c and "d" not in c
