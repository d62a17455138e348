"""Evaluation: rosbag I/O, offline replay, reports, plots, video, the demo orchestration.

Nothing here imports rclpy: bags are read and written with ``rosbags``, video with PyAV. The live
counterparts (bag player, recorder) live in ``dystream_ros.nodes``.
"""
