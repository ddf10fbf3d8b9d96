"""Packaging beyond what pyproject.toml can say: the spec lives in policies/ (where safety engineers
edit it, beside the code) and ships inside the wheel as the package data ``guard.policies``, so an
installed guard finds its default spec wherever it runs (read with importlib.resources)."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["guard*"]) + ["guard.policies", "guard.policies.examples"],
    package_dir={"guard.policies": "policies", "guard.policies.examples": "policies/examples"},
)
