"""docs/exercises.md as a reader pastes it: every `minigpt` command of its bash blocks and every python block
runs, in order, in one scratch folder (the commands in process, each must exit 0), and a text block right
after one of them is exactly what it printed. A text block elsewhere quotes the mlp template verbatim."""
import contextlib
import io
import re
import shlex
from pathlib import Path

from minigpt import exercises
from minigpt.cli import main

PAGE = Path(__file__).resolve().parent.parent / "docs" / "exercises.md"


def test_every_block_of_the_exercises_page_runs_and_prints_what_the_page_shows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(exercises.SOLVE_ENV, raising=False)
    blocks = re.findall(r"```(\w+)\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    ns, last_out, ran = {"__name__": "__main__"}, None, {"bash": 0, "python": 0, "text": 0}
    for kind, body in blocks:
        assert kind in ("bash", "python", "text"), kind
        if kind == "text":
            if last_out is not None:
                assert last_out.rstrip("\n") == body.rstrip("\n"), f"the page shows:\n{body}\nit printed:\n{last_out}"
            else:
                assert body.rstrip("\n") in exercises.template("mlp"), body
            ran["text"] += 1
            last_out = None
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            if kind == "bash":
                for line in body.splitlines():
                    assert line.startswith("minigpt "), f"only minigpt commands in the page's bash blocks: {line}"
                    assert main(shlex.split(line)[1:]) == 0, line
            else:
                exec(compile(body, f"{PAGE.name} python block", "exec"), ns)  # noqa: S102 - the page's own code
        ran[kind] += 1
        last_out = out.getvalue()
    assert ran["bash"] >= 4 and ran["python"] >= 7 and ran["text"] >= 8, ran


def test_the_page_s_table_lists_every_exercise_with_its_number_of_gradients():
    rows = re.findall(r"^\| `(\w+)` \| .* \| (\d+) \|$", PAGE.read_text(encoding="utf-8"), flags=re.M)
    assert [name for name, _ in rows] == list(exercises.list_exercises())
    for name, n in rows:
        assert int(n) == len(exercises.setup(name)[2]), name
