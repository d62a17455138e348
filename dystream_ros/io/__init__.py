"""Media I/O without ROS: image files and fitting (``images``), WAV files and sample conversion (``wav``),
MP4 writing and probing (``video``)."""
