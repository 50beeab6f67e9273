"""swarmd: a systemd-native supervisor for a fleet of forked worker nodes."""

__version__ = "0.1.0"
