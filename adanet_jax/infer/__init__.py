"""Inference: loading a trained model, predicting, skipping closed blocks."""
