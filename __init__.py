"""tallyhub: API monitoring and analytics for Python web APIs, on OpenTelemetry and ClickHouse."""

__version__ = "0.1.0"
