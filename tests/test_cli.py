"""The ``cnnfast`` command: help, train/eval/predict/search/summary/info end to end on tiny
runs, the progress bar, and one-line errors (exit status 2) for bad data."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cnnfast.cli import main
from cnnfast.training.progress import ProgressBar, format_time

TINY = ["--limit", "40", "--epochs", "1", "--batch-size", "16", "--threads", "2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli"))
    assert main(["train", *TINY, "--limit", "100", "--epochs", "2", "--out", out, "--quiet"]) == 0
    return out


def _pngs(folder, n=3, size=(8, 8), rgb=False):
    from PIL import Image
    from cnnfast.data import load_digits
    d = load_digits(8)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        a = (d.x[i, 0] * 255).astype(np.uint8)
        im = Image.fromarray(a).resize(size)
        if rgb:
            im = im.convert("RGB")
        p = os.path.join(folder, f"{i}.png")
        im.save(p)
        paths.append(p)
    return paths


def test_help_lists_commands_and_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for word in ("train", "eval", "predict", "summary", "search", "bench", "info", "examples:"):
        assert word in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--find-lr" in text and "--freeze-backbone" in text and "augmentations" in text
    assert main([]) == 2


def test_python_dash_m(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-m", "cnnfast", "--help"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and "cnnfast train" in r.stdout


def test_train_prints_progress_summary_and_json(tmp_path, capsys):
    assert main(["train", *TINY, "--out", str(tmp_path), "--augment", "hflip,cutout:4"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    # The printed summary is the run's own result: the figure in metrics.json, a whole number
    # of test images right (40 images split 70/15/15 leave 6 for the test).
    with open(tmp_path / "metrics.json") as f:
        saved = json.load(f)
    assert result["test_accuracy"] == pytest.approx(saved["test_accuracy"], abs=1e-4)
    assert result["out"] == str(tmp_path)
    cm = np.array(saved["confusion_matrix"])
    assert saved["test_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert "epoch 1/1" in captured.err and "img/s" in captured.err and "test accuracy" in captured.err
    assert "initial loss" in captured.err
    assert "\r" not in captured.err          # not a terminal: whole lines only
    assert os.path.exists(tmp_path / "curves.png")


def test_train_options_reach_the_config(tmp_path):
    out = str(tmp_path)
    assert main(["train", *TINY, "--out", out, "--quiet", "--optimizer", "sgd", "--lr", "0.03", "--momentum", "0.5",
                 "--schedule", "step", "--step-size", "1", "--gamma", "0.5", "--weight-decay", "0.001",
                 "--seed", "7", "--split-seed", "3", "--early-stopping", "3", "--dropout", "0.1",
                 "--model-args", "activation=tanh,pool=avg"]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        c = json.load(f)["config"]
    assert (c["optimizer"], c["lr"], c["momentum"], c["schedule"], c["step_size"], c["gamma"]) == \
           ("sgd", 0.03, 0.5, "step", 1, 0.5)
    assert (c["weight_decay"], c["seed"], c["split_seed"], c["early_stopping"], c["dropout"]) == (0.001, 7, 3, 3, 0.1)
    assert c["model_args"] == "activation=tanh,pool=avg" and c["threads"] == 2


def test_find_lr_command(tmp_path, capsys):
    assert main(["train", "--find-lr", "--limit", "64", "--threads", "2", "--out", str(tmp_path)]) == 0
    assert "suggested --lr" in capsys.readouterr().err
    assert os.path.exists(tmp_path / "lr_finder.png")
    with open(tmp_path / "lr_finder.json") as f:
        assert json.load(f)["suggestion"] > 0


def test_overfit_batch_command(tmp_path, capsys):
    assert main(["train", "--overfit-batch", "10", "--batch-size", "10", "--epochs", "30", "--lr", "0.003",
                 "--threads", "2", "--out", str(tmp_path), "--quiet"]) == 0


def test_resume_command(tmp_path):
    out = str(tmp_path)
    assert main(["train", *TINY, "--epochs", "2", "--stop-after", "1", "--out", out, "--quiet"]) == 0
    assert main(["train", "--resume", os.path.join(out, "last.ckpt"), "--epochs", "2", "--quiet"]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f)["epochs_run"] == 2


def test_eval_command(run_dir, tmp_path, capsys):
    ckpt = os.path.join(run_dir, "best.ckpt")
    assert main(["eval", ckpt, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion matrix" in out
    with open(tmp_path / "eval.json") as f:
        r = json.load(f)
    assert r["split"] == "test" and r["n"] == 100 and np.array(r["confusion_matrix"]).sum() == 100
    assert os.path.exists(tmp_path / "confusion.png")
    # evaluating on an explicit npz uses all of it
    from cnnfast.data import load_digits
    d = load_digits(8)
    path = str(tmp_path / "d.npz")
    np.savez(path, x=d.x[:30, 0], y=d.y[:30])
    assert main(["eval", ckpt, "--data", path, "--split", "all"]) == 0
    assert "30 images" in capsys.readouterr().out


def test_eval_rejects_labels_the_model_does_not_know(run_dir, tmp_path, capsys):
    path = str(tmp_path / "d.npz")
    np.savez(path, x=np.zeros((4, 32, 32), np.float32), y=[0, 1, 12, 3])
    assert main(["eval", os.path.join(run_dir, "best.ckpt"), "--data", path]) == 2
    assert "labels out of range" in capsys.readouterr().err


def test_predict_command(run_dir, tmp_path, capsys):
    paths = _pngs(str(tmp_path / "imgs"), n=2, size=(20, 20), rgb=True)
    assert main(["predict", os.path.join(run_dir, "best.ckpt"), *paths, "--top-k", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in res] == paths
    for r in res:
        probs = [p for _, p in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert main(["predict", os.path.join(run_dir, "best.ckpt"), paths[0]]) == 0
    assert capsys.readouterr().out.startswith(paths[0] + ": ")
    assert main(["predict", os.path.join(run_dir, "best.ckpt"), str(tmp_path / "missing.png")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_search_command(tmp_path, capsys):
    assert main(["search", "--trials", "2", "--epochs", "1", "--limit", "32", "--threads", "2", "--method", "grid",
                 "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["rank", "trial"]
    with open(tmp_path / "search.json") as f:
        assert json.load(f)["method"] == "grid"


def test_summary_and_info(capsys):
    assert main(["summary", "lenet5"]) == 0
    assert "61,706" in capsys.readouterr().out
    assert main(["info"]) == 0
    assert "simd" in capsys.readouterr().out


@pytest.mark.parametrize("make, match", [
    ("missing_file", "no such file or folder"),
    ("missing_npz", "file not found"),
    ("labels", "labels out of range"),
    ("mixed", "different sizes"),
    ("empty", "empty class folder"),
    ("nan", "NaN"),
    ("bad_ckpt", "checkpoint not found"),
])
def test_bad_data_gives_one_line_errors(tmp_path, capsys, make, match):
    args = ["train", *TINY, "--out", str(tmp_path / "out")]
    if make == "missing_file":
        args += ["--data", str(tmp_path / "nothing")]
    elif make == "missing_npz":
        args += ["--data", str(tmp_path / "nothing.npz")]
    elif make == "labels":
        np.savez(tmp_path / "d.npz", x=np.zeros((5, 16, 16)), y=[0, 1, -2, 1, 0])
        args += ["--data", str(tmp_path / "d.npz")]
    elif make == "mixed":
        _pngs(str(tmp_path / "f" / "a"), 2, (16, 16))
        _pngs(str(tmp_path / "f" / "b"), 2, (20, 20))
        args += ["--data", str(tmp_path / "f")]
    elif make == "empty":
        _pngs(str(tmp_path / "f" / "a"), 2, (16, 16))
        os.makedirs(tmp_path / "f" / "b")
        args += ["--data", str(tmp_path / "f")]
    elif make == "nan":
        x = np.ones((6, 16, 16))
        x[3, 1, 1] = np.nan
        np.savez(tmp_path / "d.npz", x=x, y=[0, 1, 0, 1, 0, 1])
        args += ["--data", str(tmp_path / "d.npz")]
    else:
        args = ["eval", str(tmp_path / "none.ckpt")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--epochs", "0"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["train", "--optimizer", "lbfgs"])
    assert main(["train", "--augment", "spin", *TINY]) == 2
    assert "unknown transform 'spin'" in capsys.readouterr().err


def test_progress_bar_tty_and_log_modes():
    s = io.StringIO()
    bar = ProgressBar(4, desc="epoch 1/2", stream=s, tty=False)
    for _ in range(4):
        bar.update(8, loss=1.0, acc=0.5)
    assert s.getvalue() == ""                      # nothing until the epoch ends
    line = bar.close(val_acc=0.75)
    assert s.getvalue() == line + "\n" and "4/4" in line and "val_acc 0.7500" in line and "img/s" in line
    t = io.StringIO()
    bar = ProgressBar(3, stream=t, tty=True, min_interval=0.0)
    bar.update(4, loss=2.0)
    assert t.getvalue().startswith("\r") and "ETA" in t.getvalue() and "1/3" in t.getvalue()
    bar.update(4, loss=4.0)
    assert "loss 3.0000" in bar.line()            # image-weighted mean over the epoch
    bar.update(4, loss=0.0)
    bar.close()
    assert t.getvalue().endswith("\n")
    assert format_time(75) == "1:15" and format_time(3725) == "1:02:05"
