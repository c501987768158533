"""The compiled part of the hub: ``tallyhub.collector_processor.convert._otlp`` (its _otlp.c).

Everything else is in pyproject.toml. The extension is optional: where it cannot be built (no C
compiler), tallyhub installs without it and the hub converts in pure Python, more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tallyhub.collector_processor.convert._otlp",
            sources=["collector_processor/convert/_otlp.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
