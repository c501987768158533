"""The compiled parts: the hub's ``tallyhub.collector_processor.convert._otlp`` (its _otlp.c) and
the client's ``tallyhub.instrumentation._places`` (_places.c).

Everything else is in pyproject.toml. The extensions are optional: where they cannot be built (no C
compiler), tallyhub installs without them and does the same in pure Python, more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tallyhub.collector_processor.convert._otlp",
            sources=["collector_processor/convert/_otlp.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
        Extension(
            "tallyhub.instrumentation._places",
            sources=["instrumentation/_places.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
    ]
)
