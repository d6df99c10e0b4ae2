"""torchvision's model definitions as PyTorch references, without importing torchvision
(its local wheel is a CUDA build that fails next to torch+cpu): the model modules are
read from a torchvision wheel on disk and loaded under a stub package, so only their
pure-PyTorch code runs. Nothing from the wheel is copied into the repository.

The wheel is looked up in $CNNFAST_TORCHVISION_WHEEL, /opt/pypi-more/files, /tmp/tv and
pip's download cache; ``load()`` returns None when none is found (tests then skip)."""
import glob
import importlib
import os
import sys
import tempfile
import types
import zipfile

_CACHE = {}
_MODULES = ["mobilenetv2", "mobilenetv3", "efficientnet", "shufflenetv2", "squeezenet", "resnet", "regnet",
            "convnext", "inception", "segmentation.fcn", "segmentation.deeplabv3"]


def _wheel():
    env = os.environ.get("CNNFAST_TORCHVISION_WHEEL")
    cands = [env] if env else []
    for d in ("/opt/pypi-more/files", "/tmp/tv", os.path.expanduser("~/.cache/pip")):
        cands += sorted(glob.glob(os.path.join(d, "**", "torchvision-*.whl"), recursive=True), reverse=True)
    return next((c for c in cands if c and os.path.exists(c)), None)


def load():
    """{module name: torchvision.models.<name> module} or None."""
    if "mods" in _CACHE:
        return _CACHE["mods"]
    whl = _wheel()
    if whl is None:
        _CACHE["mods"] = None
        return None
    root = tempfile.mkdtemp(prefix="tvref_")
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            if n.startswith(("torchvision/models/", "torchvision/ops/", "torchvision/utils.py",
                             "torchvision/_utils.py", "torchvision/_internally_replaced_utils.py")):
                z.extract(n, root)
    root = os.path.join(root, "torchvision")
    for name in ["torchvision", "torchvision.ops", "torchvision.models", "torchvision.transforms",
                 "torchvision.models.segmentation"]:
        m = types.ModuleType(name)
        m.__path__ = [os.path.join(root, *name.split(".")[1:])]
        sys.modules[name] = m
    presets = types.ModuleType("torchvision.transforms._presets")
    for n in ("ImageClassification", "SemanticSegmentation", "ObjectDetection", "VideoClassification",
              "OpticalFlow", "InterpolationMode"):
        setattr(presets, n, type(n, (), {"__init__": lambda self, *a, **k: None, "BILINEAR": 2, "BICUBIC": 3}))
    sys.modules["torchvision.transforms._presets"] = presets
    ops = sys.modules["torchvision.ops"]
    ops.StochasticDepth = importlib.import_module("torchvision.ops.stochastic_depth").StochasticDepth
    misc = importlib.import_module("torchvision.ops.misc")
    for n in ("Conv2dNormActivation", "SqueezeExcitation", "Permute", "MLP"):
        setattr(ops, n, getattr(misc, n))
    mods = {n: importlib.import_module("torchvision.models." + n) for n in _MODULES}
    _CACHE["mods"] = mods
    return mods


def build(name):
    """torchvision's model `name` with default arguments and no weights."""
    mods = load()
    for mod in mods.values():
        fn = getattr(mod, name, None)
        if callable(fn):
            if name.startswith(("fcn_", "deeplabv3_")):
                return fn(weights=None, weights_backbone=None)
            return fn()
    raise KeyError(name)
