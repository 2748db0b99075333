"""``python -m nondet verdict``: the verdict from a table of scores or from prediction files, and
a clear error naming the file, line and column for each kind of bad input."""

import subprocess
import sys

import numpy as np
import pytest

from nondet.cli import main

GOOD = """arm,seed,accuracy,loss
A,1,95.7,0.21
A,2,96.1,0.20
A,3,91.6,0.35
A,4,97.1,0.18
A,5,96.4,0.19
B,1,96.9,0.17
B,2,97.2,0.16
B,3,96.8,0.18
B,4,97.5,0.16
B,5,97.0,0.17
"""


def run(tmp_path, capsys, text, *args):
    path = tmp_path / "scores.csv"
    path.write_text(text)
    code = main(["verdict", str(path), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_scores_table_gives_the_engines_verdict(tmp_path, capsys):
    code, out, err = run(tmp_path, capsys, GOOD, "--baseline", "A", "--candidate", "B")
    assert code == 0 and not err
    lines = out.splitlines()
    assert lines[0].startswith("B vs A accuracy: NOT SIGNIFICANT, p = ")
    assert "(paired_runs, p = " in lines[0]  # seeds shared: paired
    assert any(x.startswith("  outlying baseline run seed 3 (line 4): 91.6") for x in lines)
    assert any(x.startswith("B vs A loss: ") for x in lines) and lines[-1] == "  runs paired by seed: 5 pairs"
    # without seeds: unpaired (welch), the same engine
    unpaired = "\n".join(",".join(c for i, c in enumerate(x.split(",")) if i != 1) for x in GOOD.splitlines())
    code, out, _ = run(tmp_path, capsys, unpaired + "\n", "--baseline", "A", "--candidate", "B", "--metric", "loss")
    assert code == 0 and "(welch, p = " in out and "accuracy" not in out


@pytest.mark.parametrize(
    "text, args, message",
    [
        (GOOD.replace("arm,", "group,"), (), "no column 'arm'"),
        (GOOD, ("--candidate", "C"), "no run of arm 'C' in column 'arm' (arms: A, B)"),
        ("arm,accuracy\nA,1\nA,2\nB,3\n", (), "arm 'B' has 1 run (line 4)"),
        (GOOD.replace("96.1", "nan"), (), "line 3, column 'accuracy': 'nan' is not a finite number"),
        (GOOD.replace("96.1", ""), (), "line 3, column 'accuracy': '' is not a number"),
        (GOOD.replace("96.1", "96,1"), (), "line 3: 5 fields, the header has 4 (a decimal comma?"),
        (GOOD.replace("96.1", "high"), (), "line 3, column 'accuracy': 'high' is not a number"),
        (GOOD.replace("A,2,", "A,1,"), (), "seed '1' appears twice in arm 'A' (lines 2 and 3)"),
        (GOOD.replace("loss", "speed"), (), "column 'speed': is higher better or lower?"),
        (GOOD, ("--metric", "f1"), "no column 'f1'"),
    ],
)
def test_bad_scores_are_refused_naming_column_and_line(tmp_path, capsys, text, args, message):
    base = {"--baseline": "A", "--candidate": "B"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    flat = [x for kv in base.items() for x in kv] + [a for a in args if a not in base and a not in base.values()]
    code, out, err = run(tmp_path, capsys, text, *flat)
    assert code == 2 and not out
    assert message in err and "scores.csv" in err, err


def test_a_missing_file_and_a_stated_direction(tmp_path, capsys):
    assert main(["verdict", str(tmp_path / "none.csv"), "--baseline", "A", "--candidate", "B"]) == 2
    assert "no such file" in capsys.readouterr().err
    text = GOOD.replace("loss", "speed")
    code, out, _ = run(tmp_path, capsys, text, "--baseline", "A", "--candidate", "B", "--lower-is-better", "speed")
    assert code == 0 and "B vs A speed: " in out


def test_prediction_files_with_labels(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    np.save(tmp_path / "y.npy", labels)
    for arm, skill in (("base", 1.0), ("cand", 1.3)):
        (tmp_path / arm).mkdir()
        for r in range(4):
            logits = rng.normal(0, 1, (300, 3))
            logits[np.arange(300), labels] += skill + rng.normal(0, 0.05)
            np.save(tmp_path / arm / f"run{r}.npy", logits.astype(np.float32))
    args = ["verdict", "--baseline", "base", "--candidate", "cand", "--labels", str(tmp_path / "y.npy")]
    preds = ["--predictions", f"base={tmp_path}/base/*.npy", "--predictions", f"cand={tmp_path}/cand/*.npy"]
    assert main(args + preds) == 0
    out = capsys.readouterr().out
    assert out.startswith("cand vs base accuracy: ") and "secondary, on the data distribution" in out
    assert "fixes" in out and "cand vs base cross_entropy: " in out
    assert main(args + preds[:2]) == 2
    assert "--candidate cand: no --predictions cand=GLOB (given: base)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--predictions", "base"])  # no ARM=GLOB


@pytest.mark.slow
def test_the_command_imports_neither_torch_nor_snakemake(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text(GOOD)
    code = (
        "import sys; from nondet.cli import main; "
        f"rc = main(['verdict', {str(path)!r}, '--baseline', 'A', '--candidate', 'B']); "
        "bad = [m for m in ('torch', 'snakemake', 'pandas', 'statsmodels', 'matplotlib') if m in sys.modules]; "
        "print('imported:', bad); sys.exit(rc or bool(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "imported: []" in res.stdout
