"""The backprop exercises: every solution passes, every blank template fails saying what is missing, and
typical mistakes (written here as mutated solutions) are named by the checker: a forgotten 1/N, a sum over
the wrong axis, a missed branch, a transpose. The command line's exit statuses: 0 right, 1 wrong, 2 bad input."""
import re

import numpy as np
import pytest

from minigpt import exercises as E
from minigpt.cli import main
from minigpt.errors import MiniGPTError

NAMES = ["mlp", "layernorm", "cross_entropy", "gelu", "attention", "embedding", "block"]


def write(tmp_path, text, name="answer.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


def mutated(name, old, new):
    src = E.solution(name)
    assert old in src, f"{old!r} is not in the solution of {name}"
    return src.replace(old, new, 1)


def test_the_seven_exercises_are_listed_in_order():
    assert list(E.list_exercises()) == NAMES
    assert all(isinstance(t, str) and t for t in E.list_exercises().values())


@pytest.mark.parametrize("name", NAMES)
def test_every_solution_passes_as_a_file_and_as_a_function(name, tmp_path):
    rep = E.check(name, write(tmp_path, E.solution(name)))
    assert rep.ok, str(rep)
    assert not rep.problems and all(r.status == "ok" and r.max_err < 1e-12 for r in rep.results)
    assert str(rep).splitlines()[-1] == f"PASS: all {len(rep.results)} gradients of {name} equal autograd's"
    assert E.check(name, E.solution_backward(name)).ok


@pytest.mark.parametrize("name", NAMES)
def test_the_given_forward_equals_the_reference_forward(name):
    ns = {}
    exec(E.solution(name), ns)
    p, c, g = E.setup(name)
    fc = ns["forward"](p)
    for k, v in c.items():
        np.testing.assert_allclose(fc[k], v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_every_blank_template_fails_naming_the_first_gradient_to_write(name, tmp_path):
    path = E.start(name, tmp_path)
    assert path == tmp_path / f"{name}.py" and "TODO" in path.read_text()
    rep = E.check(name, path)
    assert not rep.ok
    assert all(r.status == "todo" for r in rep.results)
    first = E.blanks(name)[0][0]
    last = str(rep).splitlines()[-1]
    if name == "block":   # its helpers come first: backward stops at the first one it calls
        assert last == "FAIL: not filled in yet: TODO: write layernorm_backward"
    else:
        assert last == f"FAIL: {first} is not filled in yet (it is the next one to write)"
    assert f"not filled in yet: {rep.results[0].name} should have shape {rep.results[0].shape}" in str(rep)


def test_every_checked_gradient_is_in_the_solution_s_dict():
    for name in NAMES:
        backward = E.solution_backward(name)
        p, c, g = E.setup(name)
        assert set(g) == set(backward(p, c)), name


# --- which, where, by how much ----------------------------------------------------------------------------
def test_a_wrong_gradient_is_located_and_measured(tmp_path):
    src = mutated("gelu", "dx3 = dinner * C * 0.044715", "dx3 = dinner * C * 0.0447")
    rep = E.check("gelu", write(tmp_path, src))
    assert not rep.ok
    r = rep["dx3"]
    p, c, g = E.setup("gelu")
    wrong = g["dinner"] * np.sqrt(2 / np.pi) * 0.0447
    err = np.abs(wrong - g["dx3"])
    assert r.status == "wrong" and r.index == np.unravel_index(np.argmax(err), err.shape)
    assert r.max_err == pytest.approx(err.max(), rel=1e-12)
    assert np.array_equal(r.mask, err > 1e-9 + 1e-7 * np.abs(g["dx3"]))   # which elements are wrong
    assert rep.first_wrong is r and rep["dinner"].status == "ok"
    assert "FAIL: dx3 is the first wrong gradient" in str(rep)
    assert "hint: inner = C * (x + 0.044715 * x3)" in str(rep)
    assert "(may only follow from dx3, wrong above: fix that first)" in str(rep)   # dx uses dx3


# --- the typical mistakes, named ---------------------------------------------------------------------------
MISTAKES = [
    ("mlp", "ddiff = 2 * c[\"diff\"] / (N * K)", "ddiff = 2 * c[\"diff\"]", "ddiff", "forgot the 1/N of the mean (N = 8"),
    ("mlp", "db2 = dout.sum(axis=0)", "db2 = dout", "db2", "forgot to sum over axis 0"),
    ("mlp", "db1 = dh_pre.sum(axis=0)", "db1 = dh_pre.sum(axis=1)", "db1", "summed over the wrong axis"),
    ("mlp", "dW1 = x.T @ dh_pre", "dW1 = dh_pre.T @ x", "dW1", "transposed it"),
    ("mlp", "dh_pre = dh * (1 - c[\"h\"] ** 2)", "dh_pre = dh", "dh_pre", "forgot the tanh"),
    ("mlp", "ddiff = 2 * c[\"diff\"] / (N * K)", "ddiff = -2 * c[\"diff\"] / (N * K)", "ddiff", "flipped the sign"),
    ("layernorm", "dxc = dxhat * c[\"rstd\"] + dvar * 2 * c[\"xc\"] / D", "dxc = dxhat * c[\"rstd\"]", "dxc",
     "missed the branch through var"),
    ("layernorm", "dx = dxc + dmu / D", "dx = dxc", "dx", "missed the branch through mu"),
    ("layernorm", "dw = (dout * c[\"xhat\"]).sum(axis=0)", "dw = (dout * c[\"xhat\"]).sum(axis=1)", "dw",
     "summed over the wrong axis"),
    ("layernorm", "dvar = drstd * -0.5 * (c[\"var\"] + EPS) ** -1.5", "dvar = drstd * -0.5 * (c[\"var\"] + EPS) ** -1.5 * 2",
     "dvar", "off by a factor of 2"),
    ("cross_entropy", "de = dprobs / c[\"s\"] + ds", "de = dprobs / c[\"s\"]", "de", "missed the branch through s"),
    ("cross_entropy", "dlogits_fused /= N\n", "\n", "dlogits_fused", "forgot the 1/N of the mean"),
    ("cross_entropy", "dpicked = -np.ones(N) / N", "dpicked = -np.ones(N)", "dpicked", "forgot the 1/N of the mean (N = 4"),
    ("gelu", "dx = dout * 0.5 * (1 + c[\"th\"]) + dinner * C + dx3 * 3 * x ** 2", "dx = dinner * C + dx3 * 3 * x ** 2",
     "dx", "missed the direct branch"),
    ("gelu", "dx = dout * 0.5 * (1 + c[\"th\"]) + dinner * C + dx3 * 3 * x ** 2",
     "dx = dout * 0.5 * (1 + c[\"th\"]) + dinner * C", "dx", "missed the branch through x3"),
    ("gelu", "dinner = dth * (1 - c[\"th\"] ** 2)", "dinner = dth * c[\"th\"]", "dinner", "instead of its derivative"),
    ("attention", "dk = datt.T @ q / np.sqrt(hs)", "dk = datt @ q / np.sqrt(hs)", "dk", "used datt @ q instead of datt.T @ q"),
    ("attention", "dq = datt @ k / np.sqrt(hs)", "dq = datt @ k", "dq", "forgot the scale 1/sqrt(hs)"),
    ("attention", "dx = dq @ Wq.T + dk @ Wk.T + dv @ Wv.T", "dx = dq @ Wq.T + dk @ Wk.T", "dx", "missed a branch"),
    ("attention", "dmasked = P * (dP - (P * dP).sum(axis=-1, keepdims=True))", "dmasked = P * dP", "dmasked",
     "without subtracting the row sum"),
    ("attention", "dP = do @ v.T", "dP = (do @ v.T).T", "dP", "transposed it"),
    ("embedding", "    np.add.at(dW, ids, demb)\n", "", "dW", "missed the embedding's branch"),
    ("embedding", "np.add.at(dW, ids, demb)", "dW[ids] += demb", "dW", "a repeated id keeps one row"),
    ("embedding", "dW = dlogits.T @ c[\"h\"]", "dW = np.zeros_like(W)", "dW", "missed the head's branch"),
    ("block", "dx1 = dout + dm_x1", "dx1 = dm_x1", "dx1", "missed the residual branch"),
    ("block", "dx = dx1 + da_x", "dx = dx1", "dx", "missed the attention's branch"),
]


@pytest.mark.parametrize("name,old,new,grad,words", MISTAKES, ids=[f"{m[0]}-{m[3]}-{i}" for i, m in enumerate(MISTAKES)])
def test_a_typical_mistake_is_named(name, old, new, grad, words, tmp_path):
    rep = E.check(name, write(tmp_path, mutated(name, old, new)))
    assert not rep.ok
    r = rep[grad]
    assert r.status == "wrong" and rep.first_wrong is r, str(rep)
    assert r.mistake is not None and words in r.mistake, str(rep)
    assert f"looks like you {r.mistake}" in str(rep)


def test_a_wrong_value_without_a_known_cause_names_no_mistake(tmp_path):
    rep = E.check("mlp", write(tmp_path, mutated("mlp", "dh = dout @ W2.T", "dh = np.sin(dout @ W2.T)")))
    assert rep["dh"].status == "wrong" and rep["dh"].mistake is None
    assert "hint: out = h @ W2 + b2" in str(rep)


def test_the_gradients_written_before_an_exception_are_still_checked(tmp_path):
    src = E.template("mlp").replace("ddiff = None", "ddiff = 2 * c[\"diff\"] / (N * K)").replace(
        "dout = None", "dout = ddiff").replace("dW2 = None", "dW2 = c[\"h\"].T @ dout").replace(
        "dh = None", "dh = dW2 @ x")
    rep = E.check("mlp", write(tmp_path, src))
    assert [r.status for r in rep.results[:3]] == ["ok"] * 3 and rep["dh"].status == "todo"
    assert rep.problems[0].startswith("backward stopped at line ") and "(dh = dW2 @ x) with ValueError" in rep.problems[0]


def test_a_none_used_in_arithmetic_says_to_fill_in_from_the_top(tmp_path):
    src = E.template("mlp").replace("dW2 = None", "dW2 = c[\"h\"].T @ dout")
    rep = E.check("mlp", write(tmp_path, src))
    assert rep.problems[0].endswith(" - dout is still None: fill the gradients in from the top")


def test_a_changed_forward_is_reported(tmp_path):
    src = E.solution("mlp").replace("h = np.tanh(h_pre)", "h = np.maximum(h_pre, 0)")
    rep = E.check("mlp", write(tmp_path, src))
    assert not rep.ok and "your forward differs from the reference at h" in rep.problems[0]


# --- bad input: one-line errors ---------------------------------------------------------------------------
def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(MiniGPTError, match="no such file"):
        E.check("mlp", tmp_path / "missing.py")
    with pytest.raises(MiniGPTError, match=r"bad.py:2: syntax error"):
        E.check("mlp", write(tmp_path, "import numpy\ndef backward(p, c:\n", "bad.py"))
    with pytest.raises(MiniGPTError, match="defines no function backward"):
        E.check("mlp", write(tmp_path, "x = 1\n", "empty.py"))
    with pytest.raises(MiniGPTError, match=r"boom.py:1: running the file raised ZeroDivisionError"):
        E.check("mlp", write(tmp_path, "1 / 0\n", "boom.py"))
    with pytest.raises(MiniGPTError, match="unknown exercise 'mpl'; the exercises are: mlp, layernorm"):
        E.check("mpl", tmp_path / "x.py")
    with pytest.raises(MiniGPTError, match="not a file"):
        E.check("mlp", tmp_path)
    rep = E.check("mlp", lambda p, c: [1, 2])
    assert not rep.ok and rep.problems == ["backward returned list, not a dict of gradients (end it with "
                                           "`return dict(...)` as in the template)"]


def test_start_never_overwrites_without_force(tmp_path):
    path = E.start("gelu", tmp_path / "new" / "dir")
    assert path.read_text() == E.template("gelu")
    path.write_text("my answers")
    with pytest.raises(MiniGPTError, match="exists: it may hold your answers"):
        E.start("gelu", path.parent)
    assert path.read_text() == "my answers"
    E.start("gelu", path.parent, force=True)
    assert path.read_text() == E.template("gelu")
    with pytest.raises(MiniGPTError, match="not a folder"):
        E.start("gelu", path)


def test_the_solution_is_the_template_filled_in():
    for name in NAMES:
        sol, tpl = E.solution(name), E.template(name)
        assert "# END" not in sol and "# TODO" not in sol and "= None\n" not in sol.split("def backward")[1]
        assert tpl.count("# TODO") == E.checker.source(name).count("# TODO") > 0


# --- the command line ---------------------------------------------------------------------------------------
def test_cli_exit_statuses(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["exercises", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("mlp ")
    assert main(["exercises", "start", "layernorm", "--dir", "work"]) == 0
    assert main(["exercises", "check", "layernorm", "work/layernorm.py"]) == 1
    assert "FAIL: dout is not filled in yet" in capsys.readouterr().out
    assert main(["exercises", "start", "layernorm", "--dir", "work"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["exercises", "solution", "layernorm"]) == 0
    (tmp_path / "sol.py").write_text(capsys.readouterr().out)
    assert main(["exercises", "check", "layernorm", "sol.py"]) == 0
    assert "PASS: all 9 gradients of layernorm" in capsys.readouterr().out
    assert main(["exercises", "check", "layernorm", "nothere.py"]) == 2
    assert capsys.readouterr().err == "minigpt: error: nothere.py: no such file (start one with `minigpt exercises start NAME`)\n"
    assert main(["exercises", "check", "nope", "sol.py"]) == 2
    assert main(["exercises", "solution", "nope"]) == 2


def test_a_report_is_indexed_by_gradient_name():
    rep = E.check("gelu", E.solution_backward("gelu"))
    assert rep["dx"].name == "dx" and rep["dx"].status == "ok" and rep["dx"].shape == (3, 4)
    with pytest.raises(KeyError, match="exercise gelu checks dout, dth, dinner, dx3, dx"):
        rep["dh"]


def test_checking_a_file_against_another_exercise_says_so(tmp_path):
    path = E.start("mlp", tmp_path)
    with pytest.raises(MiniGPTError, match=r"mlp.py is the exercise mlp, not gelu: check it with `minigpt exercises "
                                           r"check mlp .*mlp.py`"):
        E.check("gelu", path)


def test_a_partly_wrong_gradient_shows_which_elements(tmp_path):
    src = mutated("cross_entropy", "dlogp[np.arange(N), y] = dpicked", "dlogp[np.arange(N), y] = dpicked\n    dlogp[0, 0] += 1")
    rep = E.check("cross_entropy", write(tmp_path, src))
    assert rep["dlogp"].index == (0, 0) and rep["dlogp"].mask.sum() == 1
    assert "wrong elements (x): x.... | ..... | ..... | .....\n" in str(rep)


def test_one_answer_alone(capsys):
    assert E.answer("mlp", "dW2") == "# dW2 (H, K): out = h @ W2 + b2; each W2[j, k] meets h[:, j] in every row\ndW2 = c[\"h\"].T @ dout\n"
    assert E.answer("block", "gelu_backward").startswith("# gelu_backward: your gelu exercise in one function")
    with pytest.raises(MiniGPTError, match="exercise mlp has no answer 'dZ'; its answers: ddiff, dout, dW2"):
        E.answer("mlp", "dZ")
    assert main(["exercises", "solution", "gelu", "dx3"]) == 0
    assert capsys.readouterr().out == E.answer("gelu", "dx3")


def test_every_answer_pasted_in_place_of_its_blank_passes(tmp_path):
    for name in NAMES:
        src = E.template(name)
        for gname, _, _ in E.blanks(name):
            if not E.checker._has_todo(name, gname):
                continue
            m = re.search(rf"^( *)(?:{gname} = None|raise NotImplementedError\(\"TODO: write {gname}\"\))$", src, re.M)
            code = E.answer(name, gname).split("\n", 1)[1]          # without its comment line
            src = src[:m.start()] + "".join(m[1] + line + "\n" for line in code.splitlines()).rstrip("\n") + src[m.end():]
        assert E.check(name, write(tmp_path, src, f"{name}.py")).ok, name
