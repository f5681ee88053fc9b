"""gradcheck for everyone's ops: a user's own Function gets the side-by-side table and the mask of its failing
elements; the fused feed-forward and LoRA ops that training runs can be checked from the command line."""
import numpy as np
import pytest

from minigpt.cli import main
from minigpt.gradcheck import GradcheckError, format_report, gradcheck
from minigpt.inspect.checkgrad import check_op
from minigpt.tensor import Function, Tensor


class Cube(Function):
    """x ** 3, with an optional deliberate error at one element."""
    wrong_at = None

    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, g):
        d = 3 * self.x ** 2 * g
        if self.wrong_at is not None:
            d[self.wrong_at] += 0.5
        return (d,)


class BrokenCube(Cube):
    wrong_at = (1, 2)


def x34():
    return Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)


def test_a_user_function_passes_with_a_table():
    rep = gradcheck(Cube, x34())
    assert rep["ok"] and not rep["masks"][0].any()
    text = format_report(rep, names=["x"])
    assert text.splitlines()[0] == "x (3, 4): 0 of 12 elements fail"
    assert text.splitlines()[-1].startswith("PASS: max abs err ")


def test_a_user_function_s_wrong_element_is_in_the_table_and_the_mask():
    rep = gradcheck(BrokenCube, x34(), raise_on_failure=False)
    assert not rep["ok"] and rep["worst"]["index"] == (1, 2)
    expected = np.zeros((3, 4), bool)
    expected[1, 2] = True
    np.testing.assert_array_equal(rep["masks"][0], expected)
    lines = format_report(rep).splitlines()
    assert lines[0] == "input 0 (3, 4): 1 of 12 elements fail"
    assert lines[2].split()[:2] == ["(1,", "2)"] and float(lines[2].split()[-1]) == pytest.approx(0.5, rel=1e-6)
    assert lines[-4:] == ["    ....", "    ..x.", "    ....", f"FAIL: max abs err {rep['max_abs_err']:.3g}"]
    with pytest.raises(GradcheckError, match=r"(?s)at index \(1, 2\).*failing elements \(x\):\n    \.\.\.\.\n    \.\.x\."):
        gradcheck(BrokenCube, x34())


@pytest.mark.parametrize("op,n", [("feed_forward", 4 * 8 + 8 * 16 + 16 + 16 * 8 + 8), ("lora", 3 * 8 + 8 * 2 + 2 * 8)])
def test_the_ops_training_runs_can_be_checked(op, n, capsys):
    rep = check_op(op, [(4, 8) if op == "feed_forward" else (3, 8)])
    assert rep["ok"] and sum(d["analytic"].size for d in rep["inputs"].values()) == n
    assert main(["gradcheck", op, "--shape", "4,8" if op == "feed_forward" else "3,8"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"PASS: {op}, {n} gradient elements")


USER_OPS = '''
from minigpt.tensor import Function


class Cube(Function):
    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, g):
        d = 3 * self.x ** 2 * g
        d[1, 2] += 0.5
        return (d,)


class TooFew(Function):
    def forward(self, a, b):
        self.b = b
        return a * b

    def backward(self, g):
        return (g * self.b,)


def square(x):
    return x * x
'''


def test_a_user_op_from_the_command_line(tmp_path, capsys):
    ops = tmp_path / "my_ops.py"
    ops.write_text(USER_OPS)
    assert main(["gradcheck", f"{ops}:square", "--shape", "2,3"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"PASS: {ops}:square, 6 gradient elements")
    assert main(["gradcheck", f"{ops}:Cube", "--shape", "3,4"]) == 1
    out = capsys.readouterr().out
    assert "  failing elements (x), 1 of 12:\n    ....\n    ..x.\n    ....\n" in out
    assert out.splitlines()[-1].startswith(f"FAIL: {ops}:Cube, 12 gradient elements; max abs err 0.5")
    # too few gradients: the cause is the finding (PyTorch: "returned an incorrect number of gradients")
    assert main(["gradcheck", f"{ops}:TooFew", "--shape", "3", "--shape", "3"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"FAIL: {ops}:TooFew: backward failed: function TooFew.backward returned an incorrect number of gradients "
        "(expected 2, got 1): one per input, None for an input that needs none")


def test_bad_user_op_names_are_one_line_errors(tmp_path, capsys):
    ops = tmp_path / "my_ops.py"
    ops.write_text(USER_OPS)
    assert main(["gradcheck", f"{ops}:Nope", "--shape", "2"]) == 2
    assert capsys.readouterr().err == (f"minigpt: error: {ops} defines no Function subclass or function named "
                                       "'Nope' (its Functions: Cube, TooFew)\n")
    assert main(["gradcheck", f"{tmp_path}/missing.py:Cube", "--shape", "2"]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "broken.py").write_text("def f(:\n")
    assert main(["gradcheck", f"{tmp_path}/broken.py:f", "--shape", "2"]) == 2
    assert capsys.readouterr().err == f"minigpt: error: {tmp_path}/broken.py:1: syntax error: invalid syntax\n"
