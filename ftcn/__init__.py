"""ftcn-stream: real-time and offline deepfake analysis with FTCN+TT."""

__version__ = "0.1.0"
