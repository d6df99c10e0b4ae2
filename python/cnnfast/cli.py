"""The ``cnnfast`` command (also ``python -m cnnfast``).

Subcommands: train, eval, predict, summary, search, bench, info, and the demos and tools
that own their argument parsing (detect, verify, style, gan, import; see DELEGATED).
``main(argv)``
returns the exit status: 0 on success, 2 for bad arguments or unusable data (with a
one-line message, no traceback), 1 for other failures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

from ._cli_common import Formatter as _Formatter
from ._cli_common import positive_int as _positive_int
from ._cli_common import run_folder, run_guarded

EPILOG = """\
examples:
  cnnfast train                                   LeNet-5 on the bundled digits (~98-99% test accuracy)
  cnnfast train --epochs 5 --optimizer sgd --lr 0.05 --schedule step --out runs/sgd
  cnnfast train --data photos/ --image-size 32 --model resnet18 --augment crop,hflip,jitter
  cnnfast train --find-lr                         plot loss against learning rate, suggest one
  cnnfast train --overfit-batch 32 --epochs 50    can the model memorise 32 images?
  cnnfast train --resume runs/X/last.ckpt --epochs 30
  cnnfast train --nproc 2                         data parallel on 2 processes (MPI)
  cnnfast train --data new.npz --pretrained runs/X/best.ckpt --freeze-backbone --reinit-head
  cnnfast eval runs/X/best.ckpt                   test accuracy and confusion matrix
  cnnfast predict runs/X/best.ckpt a.png b.png --top-k 3
  cnnfast search --trials 12 --epochs 3           random search over lr, weight decay, batch size, dropout
  cnnfast summary resnet18 --input 3,32,32
  cnnfast bench --quick
  cnnfast info

Run `cnnfast COMMAND --help` for the options of a command.
"""

# Subcommands whose module parses its own arguments: name -> ("module:function(argv) -> int", help).
# They are imported only when run, so `cnnfast train` never pays for detection or ONNX imports.
DELEGATED = {
    "summary": ("cnnfast.utils.summary:summary_main",
                "layers, shapes, parameters, multiply-adds and memory of a model"),
    "detect": ("cnnfast.detection.demo:main", "IoU/NMS/YOLO: train a tiny detector on generated shapes (--demo)"),
    "verify": ("cnnfast.verification.demo:main",
               "Siamese/triplet one-shot verification on held-out digit classes (--demo)"),
    "style": ("cnnfast.style.cli:main", "neural style transfer: cnnfast style CONTENT STYLE"),
    "gan": ("cnnfast.gan.demo:main", "train a small DCGAN on the digits, write sample grids"),
    "import": ("cnnfast.onnx.cli:main", "load an ONNX model: cnnfast import MODEL.onnx --summary"),
}

TRAIN_EPILOG = """\
data (--data):
  digits          scikit-learn's 1,797 8x8 handwritten digits, padded to 32x32 (the default)
  FILE.npz        arrays x (N,H,W | N,H,W,C | N,C,H,W) and y (N,) integer labels; optional classes
  FOLDER/         one sub-folder per class holding image files (png, jpg, ...), read with Pillow

augmentations (--augment, comma-separated, each NAME or NAME:VALUE):
  hflip[:P] vflip[:P] crop[:PADDING] scale[:MIN_AREA] jitter[:S] brightness[:S] contrast[:S] cutout[:SIZE]

outputs (--out, default runs/<timestamp>/):
  metrics.json  per-epoch train/validation loss and accuracy, test accuracy, wall time, images/s,
                peak memory (peak_memory_bytes; --profile-memory adds memory_profile)
  curves.png    loss and accuracy, train vs validation
  confusion.png confusion matrix on the test split
  last.ckpt / best.ckpt  checkpoints (model, optimizer, schedule, epoch, RNG, normalisation)
"""


def _add_train_args(p: argparse.ArgumentParser, search: bool = False) -> None:
    from .training import DEFAULT_LR, OPTIMIZERS, SCHEDULES

    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="lenet5", help="architecture from cnnfast.models (cnnfast summary lists them)")
    g.add_argument("--data", default="digits", help="digits, a .npz file or an image folder (see below)")
    g.add_argument("--image-size", type=_positive_int, default=None, help="resize images to N x N")
    g.add_argument("--augment", default=None,
                   help="comma-separated augmentations (see below); default crop:2,scale:0.85 for digits, "
                        "none otherwise; 'none' turns them off")
    g.add_argument("--limit", type=_positive_int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation/test split")
    g.add_argument("--model-args", default=None, metavar="K=V,...",
                   help="builder arguments, e.g. activation=tanh,pool=avg (LeNet-5's 1998 form); "
                        "default for lenet5: activation=relu,pool=max")
    if not search:
        g.add_argument("--dropout", type=float, default=0.0, help="dropout before the classifier head")
    o = p.add_argument_group("optimisation")
    o.add_argument("--optimizer", default="adam", choices=OPTIMIZERS, help="update rule")
    if not search:
        o.add_argument("--lr", type=float, default=None,
                       help="learning rate (default per optimizer: " +
                            ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
        o.add_argument("--weight-decay", type=float, default=0.0, help="L2 penalty")
        o.add_argument("--batch-size", type=_positive_int, default=32, help="images per step")
    o.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (Nesterov)")
    o.add_argument("--schedule", default="cosine", choices=SCHEDULES, help="learning-rate schedule")
    o.add_argument("--warmup", type=int, default=0, help="epochs of linear learning-rate warm-up")
    o.add_argument("--step-size", type=_positive_int, default=10, help="--schedule step: epochs between decays")
    o.add_argument("--gamma", type=float, default=0.1, help="--schedule step: decay factor")
    o.add_argument("--epochs", type=_positive_int, default=3 if search else 30, help="passes over the training set")
    o.add_argument("--seed", type=int, default=0, help="seed of initial weights, shuffling, augmentation, dropout")
    r = p.add_argument_group("run")
    r.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (default: all cores, or CNNFAST_NUM_THREADS)")
    r.add_argument("--device", default="cpu",
                   help="cpu, cuda (cuda:N) or auto (the GPU when one is present, else the CPU)")
    r.add_argument("--out", default=None, help="output folder (default runs/<timestamp>/)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--precision", default=None, choices=["fp32", "bf16"],
                   help="bf16: conv/linear in bfloat16 with fp32 accumulation (AMX / AVX512-BF16; slower fallback "
                        "elsewhere), fp32 master weights (default fp32)")


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnnfast",
        description="cnnfast: train, evaluate and inspect convolutional networks that run on cnnfast's own "
                    "C++ (AVX2/FMA) kernels. With no options, `cnnfast train` trains LeNet-5 on handwritten "
                    "digits in well under a minute.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a model (default: LeNet-5 on digits)", epilog=TRAIN_EPILOG,
                       formatter_class=_Formatter,
                       description="Train a classifier with a progress bar, validation every epoch, checkpoints "
                                   "and plots.")
    _add_train_args(t)
    x = t.add_argument_group("training aids")
    x.add_argument("--early-stopping", type=_positive_int, default=None, metavar="PATIENCE",
                   help="stop when validation accuracy has not improved for PATIENCE epochs")
    x.add_argument("--overfit-batch", type=_positive_int, default=None, metavar="N",
                   help="train and validate on N training images only: a healthy model memorises them")
    x.add_argument("--find-lr", action="store_true",
                   help="run the learning-rate range test instead of training; writes lr_finder.png")
    x.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue exactly from a checkpoint (also one written with another --nproc)")
    x.add_argument("--stop-after", type=_positive_int, default=None, help=argparse.SUPPRESS)
    x.add_argument("--detect-anomaly", action="store_true",
                   help="check every operation's outputs for NaN/Inf (slower) and name the first one that "
                        "produced one; training always stops on a non-finite loss or weight, keeping the last "
                        "good checkpoint")
    x.add_argument("--profile-memory", action="store_true",
                   help="report where one training step's memory goes (saved activations per op, workspaces, "
                        "gradients, optimizer state, peak) and add it to metrics.json")
    d = t.add_argument_group("data-parallel training (pip install \"cnnfast[dist]\")")
    d.add_argument("--nproc", type=_positive_int, default=None, metavar="N",
                   help="train on N local processes started through the bundled mpiexec; --batch-size stays "
                        "the global batch, threads per process default to cores / N. For several machines run "
                        "`mpiexec -f HOSTFILE -n N cnnfast train ...` instead")
    tl = t.add_argument_group("transfer learning")
    tl.add_argument("--pretrained", default=None, metavar="CKPT", help="start from this checkpoint's weights")
    tl.add_argument("--freeze-backbone", action="store_true", help="train only the last layer")
    tl.add_argument("--reinit-head", action="store_true", help="re-initialise the last layer")

    e = sub.add_parser("eval", help="accuracy and confusion matrix of a checkpoint", formatter_class=_Formatter,
                       description="Evaluate a checkpoint: by default on the test split of the data it was "
                                   "trained on; with --data, on all of that data.")
    e.add_argument("checkpoint", help="a .ckpt file written by cnnfast train (last.ckpt or best.ckpt)")
    e.add_argument("--data", default=None, help="digits, a .npz file or an image folder")
    e.add_argument("--split", default=None, choices=["train", "val", "test", "all"],
                   help="which part of the data (default: test, or all with --data)")
    e.add_argument("--batch-size", type=_positive_int, default=256, help="images per forward pass")
    e.add_argument("--out", default=None, help="folder for eval.json and confusion.png")
    e.add_argument("--threads", type=_positive_int, default=None, help="CPU threads")
    e.add_argument("--device", default="cpu", help="cpu, cuda (cuda:N) or auto (the GPU when one is present)")

    pr = sub.add_parser("predict", help="classify image files with a checkpoint", formatter_class=_Formatter,
                        description="Per-image top-k predictions with probabilities.")
    pr.add_argument("checkpoint", help="a .ckpt file written by cnnfast train")
    pr.add_argument("images", nargs="+", help="image files (png, jpg, ...); resized to the model's input")
    pr.add_argument("--top-k", type=_positive_int, default=3, help="classes to show per image")
    pr.add_argument("--json", action="store_true", help="print JSON instead of text")
    pr.add_argument("--threads", type=_positive_int, default=None, help="CPU threads")

    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False,
                       description=f"Run `cnnfast {name} --help` for its options.")

    s = sub.add_parser("search", help="random (or grid) hyper-parameter search", formatter_class=_Formatter,
                       description="Short trainings over learning rate (log-uniform), weight decay (log-uniform), "
                                   "batch size and dropout; prints and saves a table sorted by validation accuracy.")
    s.add_argument("--trials", type=_positive_int, default=8, help="number of trainings")
    s.add_argument("--method", default="random", choices=["random", "grid"])
    s.add_argument("--lr-range", type=float, nargs=2, default=(1e-4, 3e-2), metavar=("LOW", "HIGH"))
    s.add_argument("--wd-range", type=float, nargs=2, default=(1e-6, 1e-2), metavar=("LOW", "HIGH"))
    s.add_argument("--batch-sizes", type=_positive_int, nargs="+", default=(16, 32, 64, 128))
    s.add_argument("--dropout-range", type=float, nargs=2, default=(0.0, 0.5), metavar=("LOW", "HIGH"))
    s.add_argument("--search-seed", type=int, default=0, help="seed of the sampled configurations")
    _add_train_args(s, search=True)

    b = sub.add_parser("bench", help="time training against PyTorch", formatter_class=_Formatter,
                       description="Runs benchmarks/bench_train.py when this is a source checkout, otherwise a "
                                   "quick built-in timing of LeNet-5 training steps.")
    b.add_argument("--quick", action="store_true", help="fewer steps")
    b.add_argument("--builtin", action="store_true", help="use the built-in timing even in a checkout")
    b.add_argument("--threads", type=_positive_int, default=2, help="threads for both frameworks")

    sub.add_parser("info", help="build and CPU/GPU facts (cnnfast.info())", description="Print cnnfast.info().")
    return p


def _train_config(a: argparse.Namespace):
    from .training import TrainConfig

    keys = {f for f in TrainConfig.__dataclass_fields__}
    kw = {k: v for k, v in vars(a).items() if k in keys and v is not None}
    kw.setdefault("out", None)
    return TrainConfig(**kw)


def _cmd_train(a) -> int:
    from .distributed.comm import launched_by_mpi
    from .training import run_find_lr, train

    cfg = _train_config(a)
    if a.nproc and a.find_lr:
        raise ValueError("--find-lr runs on one process; leave out --nproc")
    if cfg.out is None and not a.resume and not launched_by_mpi():
        cfg.out = run_folder()
    if a.nproc and a.nproc > 1 and not launched_by_mpi():
        return _launch_train(a, cfg.out)
    if a.find_lr:
        run_find_lr(cfg)
        return 0
    if launched_by_mpi():
        return _train_rank(a, cfg)
    return _report_train(cfg, train(cfg))


def _launch_train(a, out: Optional[str]) -> int:
    """`cnnfast train --nproc N`: the same command on N processes under the bundled mpiexec;
    the output folder is fixed here so that every rank agrees on it."""
    from .distributed.launch import find_mpiexec, launch

    try:
        import mpi4py  # noqa: F401  (every rank needs it)
        find_mpiexec()
    except (ImportError, RuntimeError):
        raise ValueError("--nproc: data-parallel training needs mpi4py and mpiexec; pip install \"cnnfast[dist]\"") \
            from None
    argv = list(a._argv)
    if out is not None and a.out is None:
        argv += ["--out", out]
    return launch(a.nproc, [sys.executable, "-m", "cnnfast"] + argv)


def _train_rank(a, cfg) -> int:
    """One rank of a data-parallel job: an error on any rank stops the whole job (the other
    ranks would wait for it in their next collective) with a message naming the rank."""
    from . import distributed as dist
    from .training import train

    comm = dist.init(abort_on_exception=False)
    if a.nproc and a.nproc != comm.size:
        exc = ValueError(f"--nproc {a.nproc} differs from the {comm.size} processes mpiexec started; "
                         "leave out --nproc under mpiexec")
        if comm.rank == 0:
            print(f"cnnfast train: error: {exc}", file=sys.stderr, flush=True)
        return 2
    if cfg.out is None and not a.resume and comm.rank == 0:
        cfg.out = run_folder()
    try:
        m = train(cfg)
    except BaseException as exc:  # noqa: BLE001 - every failure must stop the other ranks
        if comm.size > 1:
            dist.abort_job(exc, 2 if isinstance(exc, ValueError) else 1)
        raise
    return _report_train(cfg, m) if comm.rank == 0 else 0


def _report_train(cfg, m) -> int:
    print(json.dumps({"test_accuracy": round(m["test_accuracy"], 4), "best_val_acc": round(m["best_val_acc"], 4),
                      "epochs": m["epochs_run"], "wall_time_s": round(m["wall_time_s"], 2),
                      "out": m["config"]["out"]}))
    if cfg.overfit_batch and not m.get("memorised"):
        return 1
    return 0


def _cmd_eval(a) -> int:
    from .training import evaluate_checkpoint
    from .training.plots import plot_confusion

    from .training.trainer import set_threads
    set_threads(a.threads)
    r = evaluate_checkpoint(a.checkpoint, a.data, a.split, a.batch_size, a.device)
    cm = r["confusion_matrix"]
    print(f"{r['source']} ({r['split']}, {r['n']} images): accuracy {r['acc']:.4f}  loss {r['loss']:.4f}")
    width = max(4, max(len(str(c)) for c in r["classes"]) + 1, len(str(cm.max())) + 1)
    print("confusion matrix (rows: true, columns: predicted)")
    print(" " * width + "".join(f"{str(c)[:width - 1]:>{width}}" for c in r["classes"]))
    for c, row in zip(r["classes"], cm):
        print(f"{str(c)[:width - 1]:>{width}}" + "".join(f"{v:>{width}}" for v in row))
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        plot_confusion(cm, os.path.join(a.out, "confusion.png"), r["classes"])
        with open(os.path.join(a.out, "eval.json"), "w") as f:
            json.dump({"checkpoint": a.checkpoint, "source": r["source"], "split": r["split"], "n": r["n"],
                       "accuracy": r["acc"], "loss": r["loss"], "classes": r["classes"],
                       "confusion_matrix": cm.tolist()}, f, indent=2)
    return 0


def _cmd_predict(a) -> int:
    from .training import predict_images

    from .training.trainer import set_threads
    set_threads(a.threads)
    results = predict_images(a.checkpoint, a.images, a.top_k)
    if a.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['path']}: " + ", ".join(f"{c} {p:.3f}" for c, p in r["top"]))
    return 0


def _cmd_search(a) -> int:
    from .training import SearchSpace, format_table, search

    cfg = _train_config(a)
    out = a.out or run_folder("search-")
    space = SearchSpace(lr=tuple(a.lr_range), weight_decay=tuple(a.wd_range), batch_size=tuple(a.batch_sizes),
                        dropout=tuple(a.dropout_range))
    rows = search(cfg, trials=a.trials, method=a.method, epochs=a.epochs, seed=a.search_seed, space=space, out=out,
                  quiet=a.quiet)
    print(format_table(rows))
    print(f"wrote {out}/search.csv, search.json, search.png")
    return 0


def _cmd_bench(a) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    script = os.path.normpath(os.path.join(here, "..", "..", "benchmarks", "bench_train.py"))
    try:
        import torch  # noqa: F401  (the side-by-side script needs it)
        have_torch = True
    except ImportError:
        have_torch = False
    if os.path.exists(script) and have_torch and not a.builtin:
        import runpy
        sys.argv = [script] + (["--quick"] if a.quick else []) + ["--threads", str(a.threads)]
        runpy.run_path(script, run_name="__main__")
        return 0
    return _builtin_bench(a.quick, a.threads)


def _builtin_bench(quick: bool, threads: int) -> int:
    """Images/s of LeNet-5 training steps (batch 64, Adam) on random data."""
    import numpy as np

    import cnnfast
    from . import functional as F
    from .models import lenet5

    from .training.trainer import set_threads
    set_threads(threads)
    cnnfast.manual_seed(0)
    model = lenet5()
    opt = cnnfast.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    steps = 10 if quick else 50

    def run(n):
        for _ in range(n):
            loss = F.cross_entropy(model(cnnfast.tensor(x)), cnnfast.tensor(y))
            opt.zero_grad()
            loss.backward()
            opt.step()

    run(3)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        run(steps)
        times.append(time.perf_counter() - t)
    rate = steps * 64 / sorted(times)[1]
    print(f"cnnfast LeNet-5 training, batch 64, {threads} threads: {rate:,.0f} images/s")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        import importlib
        target, _ = DELEGATED[argv[0]]
        module_name, function_name = target.split(":")
        module = importlib.import_module(module_name)
        return getattr(module, function_name)(argv[1:])
    parser = _build_parser()
    a = parser.parse_args(argv)
    a._argv = argv
    if a.command is None:
        parser.print_help()
        return 2
    if a.command == "info":
        import cnnfast
        cnnfast.info()
        return 0
    handler = {"train": _cmd_train, "eval": _cmd_eval, "predict": _cmd_predict, "search": _cmd_search,
               "bench": _cmd_bench}[a.command]
    # DataError is a ValueError: unusable data is a usage error (exit 2).
    return run_guarded(f"cnnfast {a.command}", lambda: handler(a))

if __name__ == "__main__":
    sys.exit(main())
