"""`minigpt gradcheck OP`: any functional op by name, side-by-side report, PASS/FAIL, one-line errors."""
import numpy as np
import pytest

import minigpt
from minigpt.cli import main
from minigpt.inspect.checkgrad import check_op, format_report, parse_kw, parse_shape


def test_layer_norm_report(capsys):
    assert main(["gradcheck", "layer_norm", "--shape", "4,16", "--kw", "eps=1e-5", "--worst", "3"]) == 0
    out = capsys.readouterr().out
    assert "gradcheck layer_norm (eps=1e-05): float64" in out
    for name, shape in (("x", "(4, 16)"), ("weight", "(16,)"), ("bias", "(16,)")):
        assert f"input {name} {shape}: max abs err" in out
    assert out.strip().splitlines()[-1].startswith("PASS: layer_norm, 96 gradient elements; max abs err")
    rows = [l for l in out.splitlines() if l.startswith("  (")]
    assert len(rows) == 9  # 3 worst elements of each of the 3 inputs
    idx, analytic, numeric, err = rows[0].split(")")[0] + ")", *rows[0].split(")")[1].split()
    assert abs(float(analytic) - float(numeric)) == pytest.approx(float(err), rel=0.01, abs=1e-12)


@pytest.mark.parametrize("name, shapes, kw", [
    ("gelu", [(3, 5)], {}), ("causal_attention", [(2, 4, 12)], {"n_heads": 2}),
    ("cross_entropy", [(4, 7)], {}), ("embedding", [(3, 2)], {}), ("softmax", [(3, 4)], {"axis": 0}),
    ("linear", [(2, 3, 4)], {}), ("concatenate", [(2, 3), (4, 3)], {}), ("matmul", [(3, 4), (4, 2)], {}),
    ("log", [(5,)], {}), ("reshape", [(3, 4)], {"shape": (4, 3)}),
])
def test_ops_pass_and_report_both_gradients(name, shapes, kw):
    rep = check_op(name, shapes, kw)
    assert rep["ok"] and rep["max_abs_err"] < 1e-6
    for d in rep["inputs"].values():
        assert d["analytic"].shape == d["numeric"].shape == d["shape"]
        np.testing.assert_allclose(d["analytic"], d["numeric"], atol=1e-6)
    assert format_report(rep).splitlines()[-1].startswith("PASS")


def test_a_wrong_backward_fails(monkeypatch, capsys):
    import minigpt.functional as F

    cls = type(F.tanh(minigpt.Tensor(np.ones(2), requires_grad=True))._op)  # tanh's op class
    orig = cls.backward
    monkeypatch.setattr(cls, "backward", lambda self, g: tuple(1.01 * x for x in orig(self, g)))
    assert main(["gradcheck", "tanh", "--shape", "6"]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("FAIL: tanh")


def test_parsers():
    assert parse_shape("4,16") == (4, 16) and parse_shape("(3,)") == (3,) and parse_shape("") == ()
    assert parse_kw(["eps=1e-5", "axis=0", "shape=(8,2)", "mode=fast"]) == {
        "eps": 1e-5, "axis": 0, "shape": (8, 2), "mode": "fast"}


@pytest.mark.parametrize("argv, message", [
    (["gradcheck", "layernorm", "--shape", "4,16"], "unknown op 'layernorm': not a function of "
     "minigpt.functional; did you mean layer_norm?"),
    (["gradcheck", "layer_norm", "--shape", "4,16", "--shape", "8"],
     "gradcheck layer_norm(x (4, 16), weight (8,), bias (16,)): layer_norm: weight and bias must have shape (16,)"),
    (["gradcheck", "matmul", "--shape", "3,4", "--shape", "5,6"], "shapes (3, 4) and (5, 6) do not match"),
    (["gradcheck", "causal_attention", "--shape", "2,4,12"], "missing a required argument: 'n_heads' (pass it "
     "with --kw NAME=VALUE)"),
    (["gradcheck", "layer_norm", "--shape", "4,x"], "--shape '4,x': expected comma-separated sizes"),
    (["gradcheck", "gelu"], "give the shape of its first input"),
    (["gradcheck", "gelu", "--shape", "3", "--kw", "nope"], "--kw 'nope': expected NAME=VALUE"),
])
def test_bad_input_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("minigpt: error: ") and message in err and err.count("\n") == 1
