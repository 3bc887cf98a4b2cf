#!/usr/bin/env python3
"""Export ONNX for RetinaFace and FTCN+TT, build engines, print parity and throughput per batch size.

Same as `ftcn-stream build-engines`; see docs/engines.md. CPU-only quick run:
    python build_engines.py --backend onnxruntime --device cpu --batch-sizes 1
"""

import sys

from engines.build import main

if __name__ == "__main__":
    sys.exit(main())
