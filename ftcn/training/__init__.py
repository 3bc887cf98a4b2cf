"""Fine-tuning FTCN+TT: preprocess videos into aligned clips, train, evaluate (TrueMedia flow).

One concept per module: `layout` (the on-disk clip format), `preprocess` (videos -> clips through
the inference clip path), `dataset` (clips -> tensors, splits), `augment` (temporally coherent
augmentation), `metrics` (AUC/ROC/thresholds), `plots`, `distributed` (torchrun/DDP),
`train` (the loop) and `evaluate` (video-level metrics, threshold calibration).
"""
