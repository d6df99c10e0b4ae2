"""Inside the package a Tensor's array is ``._array``: ``.data`` is the torch-style detached
Tensor, and code that means the NumPy array must not reach for it (a merge that brings back
``t.data`` as an array would silently pay a wrapper per call, or break on ndarray methods)."""
import ast
import pathlib

import cnnfast

PACKAGE = pathlib.Path(cnnfast.__file__).parent
# `.data` on objects that are not Tensors: argparse results and the trainer's data holders.
NOT_TENSORS = {("cli.py", "a"), ("trainer.py", "prep"), ("trainer.py", "self"), ("trainer.py", "cfg"),
               ("trainer.py", "run")}


def test_package_code_reads_arrays_through_array_attribute():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "data":
                base = ast.unparse(node.value).split(".")[0]
                if (path.name, base) not in NOT_TENSORS:
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, ("use ._array for a Tensor's NumPy array inside cnnfast (.data is a detached Tensor); "
                           "if the object is not a Tensor, add it to NOT_TENSORS:\n" + "\n".join(offenders))
