"""ROS 2 nodes and their adapters: the only part of dystream_ros that imports rclpy."""
