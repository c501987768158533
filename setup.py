"""The compiled part of the hub: ``tallyhub.convert._otlp`` (see convert/_otlp.c).

Everything else is in pyproject.toml. The extension is optional: where it cannot be built (no C
compiler), tallyhub installs without it and the hub converts in pure Python, more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tallyhub.convert._otlp",
            sources=["convert/_otlp.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
