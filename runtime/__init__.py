"""What runs a trained model, shared by training and serving.

Cleaning and splitting (text), the label scheme (taxonomy), the artifact format and its loader
(artifact), the scoring precision (precision), the encoder, ONNX and TF-IDF runners, fusion and
the label decision (classifier, decide), and page summaries (summary). Nothing here imports
`training` or `serving`: both depend on this package, never the reverse.
"""
