"""The bundled demo dataset and its ground truth."""

from qraft_core.demo.generate import DemoFiles, generate_demo

__all__ = ["DemoFiles", "generate_demo"]
