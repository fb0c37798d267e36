"""What both HTTP directions share: bodies as byte streams, and the header rules."""
