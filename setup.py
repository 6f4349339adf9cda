"""Builds the optional C extension; all metadata is in pyproject.toml.

`optional=True`: without a C compiler the install still succeeds and confscope runs on its
pure-Python/numpy code (analyzer/speedups.py reports which is in use).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("analyzer._speedups", ["analyzer/_speedups.c"], optional=True)])
