"""dystream_ros: a robot face that talks and listens in real time (DyStream on ROS 2).

The core (``config``, ``audio``, ``model``, ``data``, ``eval``) never imports rclpy; only
``dystream_ros.nodes`` does. The ROS message types (``dystream_ros.msg``, ``dystream_ros.srv``)
exist in a colcon build (``make setup`` builds them into ``install/``).
"""

from pkgutil import extend_path

# When the source tree is first on sys.path (working in the repository), the generated message
# modules still live in the colcon install tree: let both directories form the package.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
