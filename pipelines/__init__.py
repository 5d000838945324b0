"""Kubeflow pipelines: training (validate → train → evaluate → register → promote) and inference."""
