"""Execution backends (torch, onnxruntime), ONNX export of the per-frame steps, and ``dystream bench``.

Nothing here imports rclpy.
"""
