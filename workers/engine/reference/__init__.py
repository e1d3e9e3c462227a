"""The tiny two-stream reference network and the generated moving-shapes data it is trained on (DESIGN 6)."""
