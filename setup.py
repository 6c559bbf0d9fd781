"""The compiled LETOR tokenizer and data profile pass (everything else about the package is in
pyproject.toml). It is optional: without a C compiler the package installs, LETOR goes through
Arrow's CSV reader and the profile through numpy's sort."""

import sys

from setuptools import Extension, setup

setup(ext_modules=[Extension("modeleval.engine._letor", ["operator/modeleval/engine/_letor.c"],
                             extra_compile_args=["-O3", "-ffp-contract=off"], optional=True,
                             py_limited_api=sys.version_info >= (3, 11))])
