"""tools/ab_probe.py on the CPU, with its timing processes faked: it interleaves the roots, checks
only the first round, ranks each variant against the first root, passes a root's forced config
to its child, and fails on a wrong output."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import ab_probe  # noqa: E402

SHAPES = "4096,4096,7168;4096,7168,576"


def fake_run(speeds, wrong=()):
    """A subprocess.run that answers as the child would: TFLOP/s per (root folder name, shape), or
    per (root folder name@variant, shape) for a root with a forced config."""
    calls = []

    def run(cmd, env, capture_output, text, timeout, cwd):
        # python -c CHILD shapes check variant tools_dir
        shapes, check, variant = cmd[3], cmd[4] == "1", cmd[5]
        assert Path(cmd[6], "epilogue_probe.py").is_file()
        root = Path(env["PYTHONPATH"]).name + (f"@{variant}" if variant else "")
        calls.append((root, check))
        lines = []
        for shape in shapes.split(";"):
            err = 0.5 if (root, shape) in wrong and check else (1.7e-3 if check else 0.0)
            lines.append(json.dumps(dict(shape=shape, tflops=speeds[root][shape], err=err, diff=6.8e-4 if check else 0.0)))
        return SimpleNamespace(returncode=0, stdout="\n".join(lines) + "\n", stderr="")
    return run, calls


def test_interleaves_roots_and_ranks_against_the_first(tmp_path, monkeypatch, capsys):
    speeds = {"a": {"4096,4096,7168": 1400.0, "4096,7168,576": 900.0},
              "b": {"4096,4096,7168": 1470.0, "4096,7168,576": 891.0}}
    run, calls = fake_run(speeds)
    monkeypatch.setattr(ab_probe.subprocess, "run", run)
    out = tmp_path / "ab.json"
    monkeypatch.setattr(sys, "argv", ["ab_probe", "--roots", f"base={tmp_path / 'a'}", f"new={tmp_path / 'b'}",
                                      "--rounds", "2", "--shapes", SHAPES, "--json", str(out)])
    assert ab_probe.main() == 0
    # A B A B, and only the first round checks the output against the reference.
    assert calls == [("a", True), ("b", True), ("a", False), ("b", False)]
    table = capsys.readouterr().out.split("\n\n")[-1]
    row = next(line for line in table.splitlines() if line.strip().startswith("4096,4096,7168"))
    assert "1.050" in row and "1.000" in row
    row = next(line for line in table.splitlines() if line.strip().startswith("4096,7168,576"))
    assert "0.990" in row
    assert json.loads(out.read_text())["new"]["4096,7168,576"] == [891.0, 891.0]


def test_a_root_with_a_forced_config_times_that_config(tmp_path, monkeypatch, capsys):
    speeds = {"a": {"4096,4096,7168": 1400.0, "4096,7168,576": 900.0},
              "a@tma:256x128x3:r8": {"4096,4096,7168": 1386.0, "4096,7168,576": 909.0}}
    run, calls = fake_run(speeds)
    monkeypatch.setattr(ab_probe.subprocess, "run", run)
    monkeypatch.setattr(sys, "argv", ["ab_probe", "--roots", f"pick={tmp_path / 'a'}",
                                      f"r8={tmp_path / 'a'}@tma:256x128x3:r8", "--rounds", "1", "--shapes", SHAPES])
    assert ab_probe.main() == 0
    assert calls == [("a", True), ("a@tma:256x128x3:r8", True)]
    table = capsys.readouterr().out.split("\n\n")[-1]
    assert "0.990" in next(line for line in table.splitlines() if line.strip().startswith("4096,4096,7168"))
    assert "1.010" in next(line for line in table.splitlines() if line.strip().startswith("4096,7168,576"))


def test_a_wrong_output_fails_the_probe_and_is_not_timed(tmp_path, monkeypatch, capsys):
    speeds = {"a": {"4096,4096,7168": 1400.0, "4096,7168,576": 900.0},
              "b": {"4096,4096,7168": 1470.0, "4096,7168,576": 891.0}}
    run, _ = fake_run(speeds, wrong={("b", "4096,7168,576")})
    monkeypatch.setattr(ab_probe.subprocess, "run", run)
    out = tmp_path / "ab.json"
    monkeypatch.setattr(sys, "argv", ["ab_probe", "--roots", f"base={tmp_path / 'a'}", f"new={tmp_path / 'b'}",
                                      "--rounds", "1", "--shapes", SHAPES, "--json", str(out)])
    assert ab_probe.main() == 1
    assert "WRONG" in capsys.readouterr().out
    assert "4096,7168,576" not in json.loads(out.read_text())["new"]


def test_a_crashed_child_fails_the_probe(tmp_path, monkeypatch):
    monkeypatch.setattr(ab_probe.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 1, stdout="", stderr="Traceback ..."))
    monkeypatch.setattr(sys, "argv", ["ab_probe", "--roots", f"base={tmp_path}", "--rounds", "1", "--shapes", SHAPES])
    assert ab_probe.main() == 1
